"""
Small helpers shared by the HTTP API tests (C{tests/test_api_*.py}).

Everything here talks to a registry started by L{tests.support.startRegistry}
through real HTTP on loopback: digests, blob and manifest pushes, reading the
OCI error document, a raw TCP client for requests treq cannot send (truncated
bodies, early disconnects) and a consistency check of the on-disk store.

Helpers raise C{AssertionError} (what trial reports as a failure) when the
registry answers something a spec-conforming registry must not.
"""

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import treq
from twisted.internet import defer, protocol, task
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: The OCI "empty" descriptor's content and digest (image-spec).
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = (
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
)

OCTET = {"Content-Type": ["application/octet-stream"]}

#: The spec's rule for an error code: upper-case letters and underscores.
_CODE = re.compile(r"^[A-Z_]+$")


def fail(message: str) -> None:
    """
    Fail the running test with C{message}.
    """
    raise AssertionError(message)


def digestOf(data: bytes, algorithm: str = "sha256") -> str:
    """
    @return: the OCI digest string (C{<alg>:<hex>}) of C{data}.
    """
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def descriptor(mediaType: str, data: bytes, **extra: Any) -> dict:
    """
    @return: an OCI content descriptor for C{data}.
    """
    d = {"mediaType": mediaType, "digest": digestOf(data), "size": len(data)}
    d.update(extra)
    return d


def encode(document: dict) -> bytes:
    """
    Serialise a manifest, deliberately not in canonical form (indent and a
    trailing newline), so that a registry that re-serialises instead of
    storing the exact bytes gets caught.
    """
    return json.dumps(document, indent=3).encode("utf-8") + b"\n"


def imageManifest(
    config: dict, layers: "list[dict]", mediaType: str = OCI_MANIFEST, **extra: Any
) -> bytes:
    """
    @return: the bytes of an image manifest (OCI unless C{mediaType} says
        otherwise) with the given config and layer descriptors.
    """
    document = {
        "schemaVersion": 2,
        "mediaType": mediaType,
        "config": config,
        "layers": layers,
    }
    document.update(extra)
    return encode(document)


def imageIndex(
    manifests: "list[dict]", mediaType: str = OCI_INDEX, **extra: Any
) -> bytes:
    """
    @return: the bytes of an image index (or Docker manifest list).
    """
    document = {"schemaVersion": 2, "mediaType": mediaType, "manifests": manifests}
    document.update(extra)
    return encode(document)


def resolve(reg, location: str) -> str:
    """
    Resolve a C{Location} header the way an HTTP client must (RFC 9110:
    relative to the request URL); registries may send absolute or relative
    locations.
    """
    return urljoin(reg.url + "/v2/", location)


def withQuery(url: str, params: "list[tuple[str, str]]") -> str:
    """
    Append query parameters to C{url}, keeping any it already carries (an
    upload location MAY hold critical query parameters).
    """
    if not params:
        return url
    separator = "&" if urlsplit(url).query else "?"
    if url.endswith("?"):
        separator = ""
    return url + separator + urlencode(params)


def header(resp, name: str) -> "str | None":
    """
    @return: the first value of the response header C{name}, or L{None}.
    """
    values = resp.headers.getRawHeaders(name)
    if not values:
        return None
    return values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]


def headerList(resp, name: str) -> "list[str]":
    """
    @return: every value of the response header C{name}, split on commas.
    """
    values = resp.headers.getRawHeaders(name) or []
    result = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        result.extend(v.strip() for v in value.split(",") if v.strip())
    return result


def contentLength(resp) -> "int | None":
    """
    @return: the C{Content-Length} the server sent, or L{None}.  Twisted's
        client moves the header of a GET response (a connection-control
        header there) into C{resp.length}; for HEAD it stays a header.
    """
    value = header(resp, "Content-Length")
    if value is not None:
        return int(value)
    return resp.length if isinstance(resp.length, int) else None


def mediaTypeOf(resp) -> "str | None":
    """
    @return: the C{Content-Type} of C{resp} without parameters.
    """
    value = header(resp, "Content-Type")
    if value is None:
        return None
    return value.split(";")[0].strip()


async def body(resp) -> bytes:
    """
    @return: the whole response body.
    """
    return await treq.content(resp)


async def jsonBody(resp) -> Any:
    """
    @return: the response body parsed as JSON (fails the test if it is not).
    """
    raw = await treq.content(resp)
    try:
        return json.loads(raw)
    except ValueError:
        raise AssertionError(f"response body is not JSON: {raw[:300]!r}")


async def assertError(resp, status: int, codes: "str | tuple | None" = None) -> list:
    """
    Check that C{resp} is an error with the given status and an OCI error
    document: C{Content-Type: application/json} and a body
    C{{"errors": [{"code": ..., "message": ...}, ...]}}.

    @param codes: the code the first error must carry, a tuple of accepted
        codes, or L{None} to accept any well-formed code.
    @return: the list of codes found.
    """
    raw = await treq.content(resp)
    if resp.code != status:
        raise AssertionError(
            f"expected HTTP {status}, got {resp.code}: {raw[:300]!r}"
        )
    ctype = mediaTypeOf(resp)
    if ctype != "application/json":
        raise AssertionError(
            f"error response Content-Type is {ctype!r}, not application/json"
        )
    try:
        document = json.loads(raw)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {raw[:300]!r}")
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list) or not errors:
        raise AssertionError(f"error body has no 'errors' list: {document!r}")
    found = []
    for entry in errors:
        if not isinstance(entry, dict) or not isinstance(entry.get("code"), str):
            fail(f"malformed error entry: {entry!r}")
        if not _CODE.match(entry["code"]):
            raise AssertionError(f"error code not upper-case: {entry['code']!r}")
        if "message" in entry and not isinstance(entry["message"], str):
            fail(f"error message not a string: {entry!r}")
        found.append(entry["code"])
    if codes is not None:
        accepted = (codes,) if isinstance(codes, str) else tuple(codes)
        if found[0] not in accepted:
            raise AssertionError(f"error code {found!r}, expected one of {accepted!r}")
    return found


async def startUpload(reg, repo: str, params=None) -> str:
    """
    Open an upload session (end-4a) and return its absolute URL.
    """
    url = withQuery(f"{reg.url}/v2/{repo}/blobs/uploads/", params or [])
    # treq sends Content-Length: 0 for an empty bytes body (the chunked
    # flow's POST MUST carry it); adding the header by hand would duplicate it.
    resp = await reg.client.post(url, data=b"")
    raw = await treq.content(resp)
    if resp.code != 202:
        raise AssertionError(f"POST {url}: expected 202, got {resp.code}: {raw!r}")
    location = header(resp, "Location")
    if not location:
        raise AssertionError("upload session POST returned no Location")
    return resolve(reg, location)


async def pushBlob(reg, repo: str, data: bytes, algorithm: str = "sha256") -> str:
    """
    Push C{data} as a blob with POST then PUT (the one flow every registry
    must support) and return its digest.
    """
    digest = digestOf(data, algorithm)
    location = await startUpload(reg, repo)
    resp = await reg.client.put(
        withQuery(location, [("digest", digest)]), data=data, headers=OCTET
    )
    raw = await treq.content(resp)
    if resp.code != 201:
        raise AssertionError(f"blob PUT: expected 201, got {resp.code}: {raw!r}")
    return digest


async def putManifest(
    reg, repo: str, reference: str, data: bytes, mediaType: str, params=None
):
    """
    PUT a manifest and return the (unread) response.
    """
    url = withQuery(f"{reg.url}/v2/{repo}/manifests/{reference}", params or [])
    return await reg.client.put(
        url, data=data, headers={"Content-Type": [mediaType]}
    )


async def pushManifest(
    reg, repo: str, reference: str, data: bytes, mediaType: str = OCI_MANIFEST
) -> str:
    """
    PUT a manifest, insist on 201, and return its digest.
    """
    resp = await putManifest(reg, repo, reference, data, mediaType)
    raw = await treq.content(resp)
    if resp.code != 201:
        raise AssertionError(
            f"manifest PUT {repo}:{reference}: expected 201, got {resp.code}: {raw!r}"
        )
    return digestOf(data)


@dataclass
class Image:
    """
    A pushed image: its manifest bytes and digest, and its blobs.
    """

    manifest: bytes
    digest: str
    config: bytes
    layers: "list[bytes]" = field(default_factory=list)
    mediaType: str = OCI_MANIFEST


def makeImage(seed: str, layerCount: int = 1, **extra: Any) -> Image:
    """
    Build (without pushing) a small unique OCI image from C{seed}.

    @param extra: additional top-level manifest fields (annotations, subject,
        artifactType...).
    """
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "seed": seed}
    ).encode("utf-8")
    layers = [f"layer {i} of {seed}\n".encode() * 7 for i in range(layerCount)]
    manifest = imageManifest(
        descriptor(OCI_CONFIG, config),
        [descriptor(OCI_LAYER, layer) for layer in layers],
        **extra,
    )
    return Image(manifest, digestOf(manifest), config, layers)


async def pushImage(reg, repo: str, reference: str, seed: str, **extra: Any) -> Image:
    """
    Push the blobs and the manifest of L{makeImage}C{(seed)} under
    C{reference} (a tag, or L{None} to push by digest).
    """
    image = makeImage(seed, **extra)
    await pushBlob(reg, repo, image.config)
    for layer in image.layers:
        await pushBlob(reg, repo, layer)
    await pushManifest(reg, repo, reference or image.digest, image.manifest)
    return image


async def tagsOf(reg, repo: str) -> "list[str]":
    """
    @return: the C{tags} list of C{GET /v2/<repo>/tags/list}.
    """
    resp = await reg.client.get(f"{reg.url}/v2/{repo}/tags/list")
    document = await jsonBody(resp)
    if resp.code != 200:
        raise AssertionError(f"tags list: expected 200, got {resp.code}: {document!r}")
    return document.get("tags") or []


async def status(reg, method: str, url: str, **kwargs) -> int:
    """
    Send a request, read and drop the body, return the status code.
    """
    resp = await reg.client.request(method, url, **kwargs)
    await treq.content(resp)
    return resp.code


def storeProblems(root: str) -> "list[str]":
    """
    Walk the store and list every file under a C{blobs/} directory that is
    not a complete blob: it must sit at C{blobs/<alg>/<hex>} and hash to its
    own name.  A partial upload or a temporary file visible there would let a
    later pull serve corrupt content.
    """
    problems = []
    for dirpath, _dirnames, filenames in os.walk(root):
        parts = os.path.relpath(dirpath, root).split(os.sep)
        if "blobs" not in parts:
            continue
        below = parts[len(parts) - 1 - parts[::-1].index("blobs") + 1 :]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if len(below) != 1:
                problems.append(f"{path}: not at blobs/<alg>/<hex>")
                continue
            algorithm = below[0]
            if algorithm not in hashlib.algorithms_available:
                problems.append(f"{path}: unknown algorithm directory")
                continue
            h = hashlib.new(algorithm)
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != name:
                problems.append(f"{path}: content hashes to {h.hexdigest()}")
    return problems


def readBytes(path: str) -> bytes:
    """
    @return: the content of the file at C{path}.
    """
    with open(path, "rb") as f:
        return f.read()


def blobFiles(root: str) -> "list[str]":
    """
    @return: every file below any C{blobs/} directory of the store.
    """
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        if "blobs" in os.path.relpath(dirpath, root).split(os.sep):
            found.extend(os.path.join(dirpath, n) for n in filenames)
    return found


def snapshotOutside(root: str, levels: int = 4) -> "set[str]":
    """
    Record every path below the directory C{levels} above C{root}, except
    the store itself, so that a test can show a request created nothing
    outside the store.
    """
    top = os.path.abspath(root)
    for _ in range(levels):
        top = os.path.dirname(top)
    rootAbs = os.path.abspath(root)
    seen = set()
    for dirpath, dirnames, filenames in os.walk(top):
        if os.path.abspath(dirpath) == rootAbs:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = os.path.abspath(os.path.join(dirpath, name))
            if path != rootAbs:
                seen.add(path)
    return seen


def sleep(seconds: float):
    """
    @return: a Deferred that fires after C{seconds}.
    """
    return task.deferLater(_reactor, seconds, lambda: None)


@dataclass
class RawResponse:
    """
    A response parsed by L{rawRequest}; C{status} is 0 when the server sent
    nothing before the connection closed.
    """

    status: int
    headers: "dict[str, list[str]]"
    body: bytes

    def header(self, name: str) -> "str | None":
        values = self.headers.get(name.lower())
        return values[0] if values else None


class _RawClient(protocol.Protocol):
    """
    Write a prepared byte string, optionally close the connection right
    after it, and collect whatever comes back.
    """

    def __init__(
        self, payload: bytes, closeAfterSend: bool, closeAfterReceiving: "int | None"
    ) -> None:
        self.payload = payload
        self.closeAfterSend = closeAfterSend
        self.closeAfterReceiving = closeAfterReceiving
        self.count = 0
        self.received: list[bytes] = []
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)
        if self.closeAfterSend:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        self.count += len(data)
        if self.closeAfterReceiving is not None and self.count >= self.closeAfterReceiving:
            self.closeAfterReceiving = None
            self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        if not self.done.called:
            self.done.callback(b"".join(self.received))


def _parseRaw(data: bytes) -> RawResponse:
    if not data:
        return RawResponse(0, {}, b"")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    statusCode = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return RawResponse(statusCode, headers, rest)


async def rawRequest(
    reg,
    payload: bytes,
    closeAfterSend: bool = False,
    timeout: float = 10.0,
    closeAfterReceiving: "int | None" = None,
) -> RawResponse:
    """
    Send exactly C{payload} to the registry over a fresh TCP connection and
    return what came back before the connection closed.

    @param closeAfterSend: half-close right after writing, as a client that
        dies in the middle of a request body does.
    @param timeout: abort the connection after this many seconds (a server
        still waiting for a body that never comes).
    @param closeAfterReceiving: abort the connection once this many bytes
        of the response arrived, as a client that dies mid-download does.
    """
    endpoint = TCP4ClientEndpoint(_reactor, "127.0.0.1", reg.port)
    client = _RawClient(payload, closeAfterSend, closeAfterReceiving)
    await connectProtocol(endpoint, client)
    timer = _reactor.callLater(timeout, client.transport.abortConnection)
    try:
        data = await client.done
    finally:
        if timer.active():
            timer.cancel()
    return _parseRaw(data)


def rawHead(method: str, path: str, headers: "dict[str, str]") -> bytes:
    """
    @return: an HTTP/1.1 request head (request line and headers, with
        C{Host} and C{Connection: close}) ready for L{rawRequest}.
    """
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def linkNext(resp) -> "str | None":
    """
    Parse an RFC 5988 C{Link: <url>; rel="next"} header.

    @return: the target URL (as sent, possibly relative) or L{None}.
    """
    value = header(resp, "Link")
    if value is None:
        return None
    match = re.match(r'^\s*<([^>]*)>\s*;\s*rel="?next"?\s*$', value)
    if match is None:
        raise AssertionError(f"malformed Link header: {value!r}")
    return match.group(1)


def queryOf(url: str) -> "dict[str, str]":
    """
    @return: the query parameters of C{url} as a dict.
    """
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
