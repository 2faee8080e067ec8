# -*- test-case-name: tests.test_manifestlogic,tests.test_local,tests.test_s3_store -*-
"""
The manifest rules both stores follow alike, kept apart from their I/O.

L{zotwist.storage.local.LocalStore} (an OCI layout on disk) and
L{zotwist.storage.s3.store.S3Store} (S3 + Redis) differ in where they keep a
manifest's bytes and how they change an index under a lock, but not in what
a reference means, which digest a pushed manifest gets, which blobs it must
find, which descriptor the index records or how referrers are found.  Those
rules live here once, as pure functions, with the in-memory cache of
manifest bodies and their parsed form (L{ManifestCache}) that both keep in
front of their storage.
"""

from zotwist import oci
from zotwist.errors import ManifestBlobsUnknown, RegistryError
from zotwist.manifests import ManifestInfo, parseManifest
from zotwist.storage.index import RepositoryIndex
from zotwist.storage.lru import LRU

#: Manifests larger than this are parsed in the thread pool, not on the
#: reactor thread.
PARSE_INLINE_LIMIT = 65536


def resolve(index: RepositoryIndex, reference: str) -> dict | None:
    """
    The descriptor a tag or digest names in C{index}, or L{None}.

    @raise RegistryError: C{reference} is neither a valid tag nor a valid
        digest.
    """
    if oci.looksLikeDigest(reference):
        oci.parseDigest(reference)
        return index.byDigest.get(reference)
    oci.validateTag(reference)
    return index.tags.get(reference)


def unknownManifest(reference: str) -> RegistryError:
    """
    The error of a reference that names no manifest.
    """
    return RegistryError("MANIFEST_UNKNOWN", detail={"reference": reference})


def requireRepository(index: RepositoryIndex | None, name: str) -> RepositoryIndex:
    """
    C{index}, unless the repository is unknown (C{index} is L{None}).

    @raise RegistryError: C{NAME_UNKNOWN}.
    """
    if index is None:
        raise RegistryError("NAME_UNKNOWN", detail={"name": name})
    return index


def requireDescriptor(index: RepositoryIndex, reference: str) -> dict:
    """
    L{resolve}, failing with C{MANIFEST_UNKNOWN} when nothing is found.
    """
    descriptor = resolve(index, reference)
    if descriptor is None:
        raise unknownManifest(reference)
    return descriptor


def mediaTypeOf(descriptor: dict) -> str:
    """
    The media type a descriptor gives its manifest (an OCI image manifest
    when it says none).
    """
    return descriptor.get("mediaType") or oci.OCI_MANIFEST


async def statOf(index: RepositoryIndex, reference: str, sizeOf) -> tuple[int, str, str]:
    """
    A manifest HEAD: C{(size, mediaType, digest)} of what C{reference}
    names in C{index}.

    @param sizeOf: C{sizeOf(digest)}, awaitable, the size of the bytes the
        store holds under that digest, or L{None}.
    @raise RegistryError: C{MANIFEST_UNKNOWN} when nothing is named or its
        bytes are gone.
    """
    descriptor = requireDescriptor(index, reference)
    digest = descriptor["digest"]
    size = await sizeOf(digest)
    if size is None:
        raise unknownManifest(reference)
    return size, mediaTypeOf(descriptor), digest


def pulledKeys(reference: str, digest: str) -> tuple:
    """
    What a pull of C{reference} (resolved to C{digest}) counts for in the
    push and pull times: the tag and the digest, or the digest alone.
    """
    return (reference, digest) if reference != digest else (digest,)


def pushTarget(body: bytes, reference: str, tags) -> tuple[str, list[str]]:
    """
    Check a manifest PUT's reference and extra tags against its bytes.

    A digest reference must be the digest of C{body} (in its own
    algorithm); a tag reference joins the tags, first, and the manifest is
    stored under its sha256.

    @param tags: further tags to apply (the C{tag} query parameters).
    @return: C{(digest, tags)}: the manifest's digest and the tags to point
        at it, validated, without repeats, in order.
    @raise RegistryError: C{DIGEST_INVALID} for a digest that does not
        match, C{TAG_INVALID}/C{DIGEST_INVALID} for malformed references.
    """
    tags = list(tags)
    if oci.looksLikeDigest(reference):
        algorithm, _ = oci.parseDigest(reference)
        digest = oci.digestOf(body, algorithm)
        if digest != reference:
            raise RegistryError(
                "DIGEST_INVALID",
                message="manifest digest does not match the reference",
                detail={"expected": reference, "actual": digest},
            )
    else:
        tags.insert(0, oci.validateTag(reference))
        digest = oci.digestOf(body, "sha256")
    for tag in tags:
        oci.validateTag(tag)
    return digest, list(dict.fromkeys(tags))


async def parsePushed(runner, body: bytes, contentType, digest: str) -> ManifestInfo:
    """
    L{parseManifest} of a pushed manifest: in C{runner}'s pool when it is
    large enough to hold up the reactor thread, else right here.
    """
    if len(body) > PARSE_INLINE_LIMIT:
        return await runner.run(parseManifest, body, contentType, digest)
    return parseManifest(body, contentType, digest)


def referencedDigests(info: ManifestInfo) -> list[str]:
    """
    Every digest a pushed manifest refers to (blobs, then children): all
    must still be held when the change is applied under the lock.
    """
    return [d.digest for d in info.blobs] + [d.digest for d in info.children]


def neededDigests(info: ManifestInfo, known) -> list[str]:
    """
    The digests whose bytes must be checked before a pushed manifest's
    change is queued: its blobs, then its children, but not the children
    C{known} (digests the repository's index already lists as manifests).
    """
    return [d.digest for d in info.blobs] + [
        d.digest for d in info.children if d.digest not in known
    ]


def refuseAbsent(absent: list[str]) -> None:
    """
    Refuse a manifest that names digests the repository does not hold.

    @raise ManifestBlobsUnknown: one entry per missing digest (once each,
        in order) when C{absent} is not empty.
    """
    if absent:
        raise ManifestBlobsUnknown(list(dict.fromkeys(absent)))


def descriptorFor(info: ManifestInfo, digest: str, size: int) -> dict:
    """
    The descriptor the index records for a pushed manifest.

    An image manifest's C{artifactType} is recorded only when it is not just
    its config's media type (what L{ManifestInfo.artifactType} falls back
    to when the manifest names none).
    """
    descriptor = {"mediaType": info.mediaType, "digest": digest, "size": size}
    if info.artifactType and info.mediaType == oci.OCI_MANIFEST and (
        info.artifactType != (info.blobs[0].mediaType if info.blobs else None)
    ):
        descriptor["artifactType"] = info.artifactType
    return descriptor


def holdsDigest(body: bytes | None, digest: str) -> bool:
    """
    Whether C{body} is there and has C{digest} (bytes read back from
    storage count only then).
    """
    return body is not None and oci.digestOf(body, digest.split(":", 1)[0]) == digest


class ManifestCache:
    """
    Manifest bodies and their parsed form, by digest, in front of a store's
    storage: content-addressed bytes never change, so an entry never goes
    stale, only out (least recently used first).

    @param load: C{load(name, digest)}, awaitable, the manifest's bytes
        from the store's storage, or L{None}; it answers only bytes that
        L{holdsDigest}.
    @ivar bodies: an L{LRU} of manifest bytes (64 MiB of them).
    @ivar infos: an L{LRU} of L{ManifestInfo}s (20000 of them).
    """

    def __init__(self, load):
        self._load = load
        self.bodies = LRU(64 * 1024 * 1024)
        self.infos = LRU(20000)

    def remember(self, digest: str, body: bytes, info: ManifestInfo | None = None) -> None:
        """
        Keep a manifest this process stored (and its parsed form).
        """
        self.bodies.put(digest, body, len(body))
        if info is not None:
            self.infos.put(digest, info)

    async def body(self, name: str, digest: str) -> bytes | None:
        """
        The manifest's bytes, from the cache, else from the store.
        """
        body = self.bodies.get(digest)
        if body is not None:
            return body
        body = await self._load(name, digest)
        if body is not None:
            self.bodies.put(digest, body, len(body))
        return body

    async def info(self, name: str, digest: str, mediaType) -> ManifestInfo | None:
        """
        The parsed manifest, or L{None} when its bytes are gone or do not
        parse.
        """
        info = self.infos.get(digest)
        if info is not None:
            return info
        body = await self.body(name, digest)
        if body is None:
            return None
        try:
            info = parseManifest(body, mediaType, digest)
        except RegistryError:
            return None
        self.infos.put(digest, info)
        return info

    async def read(self, name: str, index: RepositoryIndex, reference: str):
        """
        A manifest GET: C{(body, mediaType, digest)} of what C{reference}
        names in C{index}.

        @raise RegistryError: C{MANIFEST_UNKNOWN} when nothing is named or
            its bytes are gone.
        """
        descriptor = requireDescriptor(index, reference)
        digest = descriptor["digest"]
        body = await self.body(name, digest)
        if body is None:
            raise unknownManifest(reference)
        return body, mediaTypeOf(descriptor), digest

    async def referrers(self, name: str, index: RepositoryIndex, digest: str) -> list:
        """
        The manifests of C{index} whose C{subject} is C{digest}.

        The subject-to-referrers mapping is computed once per index and kept
        on it (L{RepositoryIndex.referrersByDigest}), unless the index
        changed while the manifests were read.
        """
        mapping = index.referrersByDigest
        if mapping is None:
            version = index.version
            mapping = {}
            for candidate, descriptor in list(index.byDigest.items()):
                info = await self.info(name, candidate, descriptor.get("mediaType"))
                if info is not None and info.subject is not None:
                    mapping.setdefault(info.subject.digest, []).append(info)
            if index.version == version:
                # Unchanged while the manifests were read: keep it.
                index.referrersByDigest = mapping
        return list(mapping.get(digest, []))
