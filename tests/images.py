# -*- test-case-name: tests.test_interop_skopeo -*-
"""
Build test images as OCI image layouts on disk, in pure Python.

Nothing here touches the network: layers are real gzip'd tar archives whose
file contents come from a seeded pseudo-random generator, so the same
arguments always give the same bytes and therefore the same digests.

The layouts follow the OCI image-layout specification closely enough for
C{skopeo inspect oci:PATH:TAG}, C{skopeo copy oci:PATH:TAG ...} and
C{umoci ls --layout PATH} to read them:

    - C{PATH/oci-layout} with C{imageLayoutVersion} 1.0.0;
    - C{PATH/blobs/sha256/<hex>} for every blob;
    - C{PATH/index.json} listing each tagged manifest (or image index) with
      an C{org.opencontainers.image.ref.name} annotation.

A layout may hold several tags: building into an existing layout adds (or
replaces) one entry of its C{index.json}.
"""

import gzip
import hashlib
import io
import json
import os
import random
import tarfile

MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# A fixed creation time keeps the config (and so every digest) reproducible.
_CREATED = "2024-01-01T00:00:00Z"
_MTIME = 1704067200


def _sha256(data: bytes) -> str:
    """
    Return the OCI digest string (C{sha256:<hex>}) of C{data}.
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonicalJSON(document: dict) -> bytes:
    """
    Serialise C{document} compactly and deterministically.
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _ensureLayout(path: str) -> None:
    """
    Create the skeleton of an OCI image layout at C{path} if it is missing.
    """
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    layoutFile = os.path.join(path, "oci-layout")
    if not os.path.exists(layoutFile):
        with open(layoutFile, "wb") as f:
            f.write(_canonicalJSON({"imageLayoutVersion": "1.0.0"}))
    indexFile = os.path.join(path, "index.json")
    if not os.path.exists(indexFile):
        _writeIndex(path, [])


def _writeIndex(path: str, manifests: list) -> None:
    """
    Write C{PATH/index.json} listing C{manifests} (a list of descriptors).
    """
    document = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": manifests,
    }
    with open(os.path.join(path, "index.json"), "wb") as f:
        f.write(_canonicalJSON(document))


def _writeBlob(path: str, data: bytes) -> dict:
    """
    Store C{data} as a blob of the layout at C{path}.

    @return: a partial descriptor: C{{"digest": ..., "size": ...}}.
    """
    digest = _sha256(data)
    blobPath = os.path.join(path, "blobs", "sha256", digest.split(":", 1)[1])
    if not os.path.exists(blobPath):
        with open(blobPath, "wb") as f:
            f.write(data)
    return {"digest": digest, "size": len(data)}


def _tagInIndex(path: str, tag: str, descriptor: dict) -> None:
    """
    Make C{tag} in C{PATH/index.json} point at C{descriptor}, replacing any
    earlier entry with the same tag.
    """
    with open(os.path.join(path, "index.json"), "rb") as f:
        index = json.load(f)
    manifests = [
        entry
        for entry in index.get("manifests", [])
        if entry.get("annotations", {}).get(REF_NAME) != tag
    ]
    entry = dict(descriptor)
    entry["annotations"] = {REF_NAME: tag}
    manifests.append(entry)
    _writeIndex(path, manifests)


def makeLayer(rng: random.Random, number: int, size: int) -> tuple[bytes, bytes]:
    """
    Build one layer: an uncompressed tar and its gzip'd form.

    The tar holds a directory C{layer<number>/} with a small text file and
    up to four files of seeded random bytes adding up to C{size} bytes.

    @return: C{(tarBytes, gzipBytes)}.
    """
    tarBuffer = io.BytesIO()
    with tarfile.open(fileobj=tarBuffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes | None, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = _MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        directory = f"layer{number}"
        add(directory, None, 0o755)
        add(f"{directory}/README", f"zotwist test layer {number}\n".encode(), 0o644)
        pieces = max(1, min(4, size // 1024))
        remaining = size
        for piece in range(pieces):
            length = remaining if piece == pieces - 1 else size // pieces
            remaining -= length
            add(f"{directory}/data-{piece}.bin", rng.randbytes(length), 0o644)
    tarBytes = tarBuffer.getvalue()
    gzipBytes = gzip.compress(tarBytes, compresslevel=1, mtime=0)
    return tarBytes, gzipBytes


def writeImage(
    path: str,
    layers: int = 3,
    layerSize: int = 64 * 1024,
    seed: int = 0,
    platform: tuple[str, str] = ("linux", "amd64"),
) -> dict:
    """
    Write the blobs of one single-platform image into the layout at
    C{path}, without tagging it.

    @return: the manifest descriptor (mediaType, digest, size, platform).
    """
    _ensureLayout(path)
    osName, architecture = platform[0], platform[1]
    rng = random.Random(f"{seed}/{osName}/{architecture}")
    diffIDs = []
    layerDescriptors = []
    history = []
    for number in range(layers):
        tarBytes, gzipBytes = makeLayer(rng, number, layerSize)
        diffIDs.append(_sha256(tarBytes))
        descriptor = _writeBlob(path, gzipBytes)
        layerDescriptors.append({"mediaType": MEDIA_TYPE_LAYER_GZIP, **descriptor})
        history.append({"created": _CREATED, "created_by": f"zotwist tests: layer {number}"})
    imagePlatform = {"architecture": architecture, "os": osName}
    if len(platform) > 2 and platform[2]:
        imagePlatform["variant"] = platform[2]
    config = {
        "created": _CREATED,
        **imagePlatform,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"zotwist.test.seed": str(seed)},
        },
        "rootfs": {"type": "layers", "diff_ids": diffIDs},
        "history": history,
    }
    configDescriptor = {"mediaType": MEDIA_TYPE_CONFIG, **_writeBlob(path, _canonicalJSON(config))}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": configDescriptor,
        "layers": layerDescriptors,
    }
    manifestDescriptor = _writeBlob(path, _canonicalJSON(manifest))
    return {"mediaType": MEDIA_TYPE_MANIFEST, **manifestDescriptor, "platform": imagePlatform}


def buildImage(
    path: str,
    tag: str,
    layers: int = 3,
    layerSize: int = 64 * 1024,
    seed: int = 0,
    platform: tuple[str, str] = ("linux", "amd64"),
) -> str:
    """
    Build a single-platform image in the OCI layout at C{path}, tagged
    C{tag}.

    @param layers: how many gzip'd tar layers the image has.
    @param layerSize: how many bytes of random file content each layer holds
        (before compression; random bytes barely compress).
    @param seed: seeds the file contents; a different seed gives different
        blobs.
    @param platform: C{(os, architecture)} or C{(os, architecture, variant)}.
    @return: the digest of the image manifest (C{sha256:<hex>}).
    """
    descriptor = writeImage(path, layers=layers, layerSize=layerSize, seed=seed, platform=platform)
    _tagInIndex(path, tag, descriptor)
    return descriptor["digest"]


def buildIndex(
    path: str,
    tag: str,
    platforms: list[tuple[str, str]] | None = None,
    layers: int = 2,
    layerSize: int = 16 * 1024,
    seed: int = 0,
) -> str:
    """
    Build a multi-platform OCI image index in the layout at C{path}, tagged
    C{tag}, with one child image per entry of C{platforms}.

    @param platforms: C{(os, architecture[, variant])} tuples; by default
        linux/amd64 and linux/arm64.
    @return: the digest of the image index (C{sha256:<hex>}).
    """
    if platforms is None:
        platforms = [("linux", "amd64"), ("linux", "arm64")]
    children = [
        writeImage(path, layers=layers, layerSize=layerSize, seed=seed, platform=platform)
        for platform in platforms
    ]
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": children,
    }
    descriptor = {"mediaType": MEDIA_TYPE_INDEX, **_writeBlob(path, _canonicalJSON(index))}
    _tagInIndex(path, tag, descriptor)
    return descriptor["digest"]


def blobPath(path: str, digest: str) -> str:
    """
    Return the file name of blob C{digest} in the layout at C{path}.
    """
    algorithm, hexDigest = digest.split(":", 1)
    return os.path.join(path, "blobs", algorithm, hexDigest)


def readBlob(path: str, digest: str) -> bytes:
    """
    Return the bytes of blob C{digest} in the layout at C{path}.
    """
    with open(blobPath(path, digest), "rb") as f:
        return f.read()


def readJSONBlob(path: str, digest: str) -> dict:
    """
    Return blob C{digest} of the layout at C{path}, parsed as JSON.
    """
    return json.loads(readBlob(path, digest))


def taggedDescriptor(path: str, tag: str) -> dict:
    """
    Return the descriptor that C{tag} names in C{PATH/index.json}.

    @raise KeyError: if no entry carries that tag.
    """
    with open(os.path.join(path, "index.json"), "rb") as f:
        index = json.load(f)
    for entry in index.get("manifests", []):
        if entry.get("annotations", {}).get(REF_NAME) == tag:
            return entry
    raise KeyError(tag)
