# -*- test-case-name: tests.test_manifests -*-
"""
Parsing and validating manifest bodies.

A registry must store a manifest's bytes exactly as pushed, yet it has to
understand them: which blobs and child manifests they need, which subject
they refer to, what artifact type they carry.  L{parseManifest} reads a body
once into a L{ManifestInfo}; the info, not the bytes, answers those questions
afterwards (it is cached by digest, since content-addressed bytes never change).
"""

import json
from dataclasses import dataclass, field
from typing import Any

from zotwist import oci
from zotwist.errors import RegistryError

#: Bodies larger than this are refused with 413, as zot does (the spec asks
#: registries to take at least 4 MB).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class Descriptor:
    """
    An OCI content descriptor, reduced to what the registry uses.
    """

    mediaType: str
    digest: str
    size: int
    artifactType: str | None = None
    annotations: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestInfo:
    """
    What a registry needs to know about one manifest.

    @ivar blobs: descriptors of blobs that must exist in the repository
        (config and distributable layers).
    @ivar children: descriptors of manifests an index lists.
    @ivar subject: the subject descriptor, or L{None}.
    @ivar artifactType: the manifest's C{artifactType}, else (image manifests)
        its config media type, else L{None}.
    """

    mediaType: str
    digest: str
    size: int
    blobs: tuple
    children: tuple
    subject: Descriptor | None
    artifactType: str | None
    annotations: dict

    def descriptor(self) -> dict:
        """
        @return: the descriptor of this manifest as the referrers API lists it.
        """
        entry: dict[str, Any] = {
            "mediaType": self.mediaType,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifactType:
            entry["artifactType"] = self.artifactType
        if self.annotations:
            entry["annotations"] = self.annotations
        return entry


def _invalid(message: str, **detail: Any) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", message=message, detail=detail or None)


def _annotations(value: Any, where: str) -> dict:
    """
    Check an C{annotations} member: absent or C{null}, or an object of
    strings (the image-spec's C{map[string]string}, which zot's Go decoding
    enforces too).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{where}: expected an object")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _invalid(f"{where}: the value of {key[:100]!r} is not a string")
    return value


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where}: expected a descriptor object")
    mediaType = value.get("mediaType")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(mediaType, str) or not mediaType:
        raise _invalid(f"{where}.mediaType: expected a string")
    if not isinstance(digest, str):
        raise _invalid(f"{where}.digest: expected a digest string")
    try:
        oci.parseDigest(digest)
    except RegistryError:
        raise _invalid(f"{where}.digest: invalid digest", digest=digest[:200])
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}.size: expected a non-negative integer")
    annotations = _annotations(value.get("annotations"), f"{where}.annotations")
    artifactType = value.get("artifactType")
    if artifactType is not None and not isinstance(artifactType, str):
        raise _invalid(f"{where}.artifactType: expected a string")
    return Descriptor(mediaType, digest, size, artifactType, annotations)


def normaliseContentType(header: str | None) -> str | None:
    """
    Drop parameters (C{; charset=...}) from a Content-Type, as the spec asks
    registries to ignore them.
    """
    if header is None:
        return None
    value = header.split(";", 1)[0].strip().lower()
    return value or None


def parseManifest(body: bytes, contentType: str | None, digest: str) -> ManifestInfo:
    """
    Validate a manifest body and describe it.

    @param contentType: the request's Content-Type (parameters allowed), or
        L{None} when the client sent none.
    @param digest: the digest of C{body} (computed by the caller).
    @raise RegistryError: C{MANIFEST_INVALID} (400, or 415 for a media type
        this registry does not store as a manifest).
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise _invalid(f"manifest is not valid JSON: {e}")
    except RecursionError:
        raise _invalid("manifest is nested too deeply")
    if not isinstance(document, dict):
        raise _invalid("manifest is not a JSON object")
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType: expected a string")
    headerType = normaliseContentType(contentType)
    if headerType in (None, "application/json", "application/octet-stream"):
        headerType = None
    if declared and headerType and declared != headerType:
        raise _invalid(
            "manifest mediaType does not match Content-Type",
            mediaType=declared,
            contentType=headerType,
        )
    mediaType = headerType or declared
    if mediaType is None:
        if "manifests" in document:
            mediaType = oci.OCI_INDEX
        elif "config" in document:
            mediaType = oci.OCI_MANIFEST
        else:
            raise _invalid("cannot tell the manifest's media type")
    if mediaType not in oci.MANIFEST_TYPES:
        raise RegistryError(
            "MANIFEST_INVALID",
            message=f"unsupported manifest media type {mediaType!r}",
            status=415,
        )
    if document.get("schemaVersion") != 2:
        raise _invalid("schemaVersion: expected 2")

    blobs: list[Descriptor] = []
    children: list[Descriptor] = []
    artifactType = document.get("artifactType")
    if artifactType is not None and not isinstance(artifactType, str):
        raise _invalid("artifactType: expected a string")
    if mediaType in oci.IMAGE_MANIFEST_TYPES:
        if "manifests" in document:
            raise _invalid("an image manifest has no 'manifests' list")
        config = _descriptor(document.get("config"), "config")
        blobs.append(config)
        layers = document.get("layers", [])
        if layers is None:
            layers = []
        if not isinstance(layers, list):
            raise _invalid("layers: expected a list")
        for i, layer in enumerate(layers):
            descriptor = _descriptor(layer, f"layers[{i}]")
            if not oci.isNonDistributable(descriptor.mediaType):
                blobs.append(descriptor)
        if artifactType is None:
            artifactType = config.mediaType
    else:
        if "config" in document or "layers" in document:
            raise _invalid("an index has no 'config' or 'layers'")
        manifests = document.get("manifests")
        if not isinstance(manifests, list):
            raise _invalid("manifests: expected a list")
        for i, child in enumerate(manifests):
            children.append(_descriptor(child, f"manifests[{i}]"))

    subject = None
    if document.get("subject") is not None:
        subject = _descriptor(document["subject"], "subject")
    annotations = _annotations(document.get("annotations"), "annotations")
    return ManifestInfo(
        mediaType=mediaType,
        digest=digest,
        size=len(body),
        blobs=tuple(blobs),
        children=tuple(children),
        subject=subject,
        artifactType=artifactType,
        annotations=annotations,
    )
