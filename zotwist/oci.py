# -*- test-case-name: tests.test_oci -*-
"""
The grammar of the OCI distribution-spec: repository names, tags, digests
and the manifest media types a registry accepts.

Everything here is pure and synchronous; it decides what a client may name,
before any name reaches the filesystem.
"""

import hashlib
import os
import re
import threading

from twisted.logger import Logger

from zotwist import sha256mb
from zotwist.errors import RegistryError

_log = Logger()

#: The spec's repository-name grammar, one path component at a time.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z")
_HEX = re.compile(r"[a-f0-9]+\Z")

#: Longest repository name we accept: clients cap host:port/name at 255.
MAX_NAME_LENGTH = 255

#: Components that would collide with a parent repository's own layout files.
_RESERVED_COMPONENTS = frozenset({"blobs", "index.json", "oci-layout"})

#: Supported digest algorithms: name -> (hashlib constructor, hex length).
ALGORITHMS = {
    "sha256": (hashlib.sha256, 64),
    "sha512": (hashlib.sha512, 128),
}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

#: Manifest media types that describe one image (config + layers).
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: Manifest media types that list other manifests.
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_MANIFEST_TYPES | INDEX_TYPES

#: The annotation that carries a tag in an OCI layout's index.json.
REF_NAME = "org.opencontainers.image.ref.name"

#: Layer media types a registry need not hold (foreign layers).
NON_DISTRIBUTABLE = (
    "application/vnd.oci.image.layer.nondistributable.",
    "application/vnd.docker.image.rootfs.foreign.",
)


def validateName(name: str) -> str:
    """
    Check a repository name against the spec's grammar.

    @return: C{name} unchanged.
    @raise RegistryError: C{NAME_INVALID} when it does not match, is too long,
        or uses a component that would collide with a layout file.
    """
    if not name or len(name) > MAX_NAME_LENGTH:
        raise RegistryError("NAME_INVALID", detail={"name": name[:300]})
    components = name.split("/")
    for position, component in enumerate(components):
        if not _COMPONENT.match(component):
            raise RegistryError("NAME_INVALID", detail={"name": name})
        if position > 0 and component in _RESERVED_COMPONENTS:
            raise RegistryError(
                "NAME_INVALID",
                message=f"repository name component {component!r} is reserved",
                detail={"name": name},
            )
    return name


def isTag(reference: str) -> bool:
    """
    @return: whether C{reference} is a syntactically valid tag.
    """
    return bool(_TAG.match(reference))


def validateTag(tag: str) -> str:
    """
    @raise RegistryError: C{TAG_INVALID} for anything the tag grammar rejects.
    """
    if not isTag(tag):
        raise RegistryError("TAG_INVALID", message="invalid tag", detail={"tag": tag[:200]})
    return tag


def looksLikeDigest(reference: str) -> bool:
    """
    A reference with a colon can only be meant as a digest: tags have none.
    """
    return ":" in reference


def parseDigest(digest: str) -> tuple[str, str]:
    """
    Split and check a digest string.

    @return: C{(algorithm, hex)}.
    @raise RegistryError: C{DIGEST_INVALID} when malformed or of an algorithm
        this registry does not support.
    """
    match = _DIGEST.match(digest or "")
    if match is None:
        raise RegistryError(
            "DIGEST_INVALID", message="invalid digest", detail={"digest": (digest or "")[:200]}
        )
    algorithm, encoded = match.group(1), match.group(2)
    known = ALGORITHMS.get(algorithm)
    if known is None:
        raise RegistryError(
            "DIGEST_INVALID",
            message=f"unsupported digest algorithm {algorithm!r}",
            detail={"digest": digest},
        )
    if len(encoded) != known[1] or not _HEX.match(encoded):
        raise RegistryError("DIGEST_INVALID", message="invalid digest", detail={"digest": digest})
    return algorithm, encoded


def validateAlgorithm(algorithm: str) -> str:
    """
    @raise RegistryError: C{DIGEST_INVALID} for an unsupported algorithm.
    """
    if algorithm not in ALGORITHMS:
        raise RegistryError(
            "DIGEST_INVALID",
            message=f"unsupported digest algorithm {algorithm!r}",
            detail={"algorithm": algorithm[:50]},
        )
    return algorithm


_sha256Lock = threading.Lock()
_sha256 = None
_sha256How = ""


def chooseSha256(override: str | None, kernel: bool, shaExtensions: bool) -> tuple[str, str]:
    """
    Which SHA-256 hashes uploads.

    @param override: C{ZOTWIST_SHA256}: C{"hashlib"} or C{"multibuffer"}
        (for comparisons), or L{None}.
    @param kernel: whether the multi-buffer kernel is built and runs here.
    @param shaExtensions: whether the CPU has the SHA extensions: OpenSSL
        then hashes one stream faster than the kernel hashes eight.
    @return: C{("hashlib" or "multibuffer", why)}.
    """
    if override == "hashlib":
        return "hashlib", "ZOTWIST_SHA256=hashlib"
    if kernel and override == "multibuffer":
        return "multibuffer", "ZOTWIST_SHA256=multibuffer"
    if kernel and shaExtensions:
        return "hashlib", "OpenSSL uses the CPU's SHA extensions, faster than the kernel"
    if kernel:
        return "multibuffer", ""
    return "hashlib", "the multi-buffer kernel is not built or the CPU lacks AVX2"


def _sha256Factory():
    """
    Decide once how uploads are hashed with SHA-256 (L{chooseSha256}), and
    log it.
    """
    global _sha256, _sha256How
    if _sha256 is None:
        with _sha256Lock:
            if _sha256 is None:
                kernel = sha256mb.available()
                choice, why = chooseSha256(
                    os.environ.get("ZOTWIST_SHA256"),
                    kernel,
                    kernel and sha256mb.shaExtensions(),
                )
                if choice == "multibuffer":
                    how, factory = sha256mb.describe(), sha256mb.new
                else:
                    how, factory = f"hashlib ({why})", hashlib.sha256
                _log.info("SHA-256 of uploads: {how}", how=how)
                _sha256How = how
                _sha256 = factory
    return _sha256


def sha256Backend() -> str:
    """
    Decide (and log, once) how uploads are hashed with SHA-256: call it at
    start-up so the log says it before the first push.

    @return: the description logged.
    """
    _sha256Factory()
    return _sha256How


def newHasher(algorithm: str):
    """
    @return: a fresh hasher for C{algorithm} with hashlib's surface: the
        multi-buffer one for SHA-256 when available (see L{_sha256Factory}),
        else a hashlib object.
    """
    if algorithm == "sha256":
        return _sha256Factory()()
    return ALGORITHMS[algorithm][0]()


def digestOf(data: bytes, algorithm: str = "sha256") -> str:
    """
    @return: the digest string of C{data}.
    """
    return f"{algorithm}:{ALGORITHMS[algorithm][0](data).hexdigest()}"


def isNonDistributable(mediaType: str) -> bool:
    """
    @return: whether a layer of this media type may be absent from the
        registry (the spec's non-distributable layers).
    """
    return any(mediaType.startswith(prefix) for prefix in NON_DISTRIBUTABLE)
