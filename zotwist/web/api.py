# -*- test-case-name: tests.test_api_push -*-
"""
The handlers of the OCI distribution-spec's endpoints.

Each coroutine C{<route>_<METHOD>(request, **params)} validates what the
client sent, asks the store, and answers with the headers the spec and the
Docker registry's clients rely on.  Nothing here touches a file.
"""

import bisect
import re
from urllib.parse import quote

from twisted.logger import Logger

from zotwist import oci
from zotwist.auth.interfaces import AllowEverything
from zotwist.errors import RegistryError
from zotwist.manifests import MAX_MANIFEST_SIZE
from zotwist.storage.writers import QueuedWriter
from zotwist.web.bodies import LimitedBuffer
from zotwist.web.producer import BlobProducer
from zotwist.web.resource import sendEmpty, sendError, sendJSON
from zotwist.web.sendfile import canSendfile, sendWithSendfile

#: A byte position in a Range header: plain ASCII digits (int() would also
#: take signs and underscores), or nothing.
_DIGITS = re.compile(r"[0-9]*\Z")


def _arg(request, key: str) -> str | None:
    values = request.args.get(key.encode())
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _args(request, key: str) -> list[str]:
    return [v.decode("utf-8", "replace") for v in request.args.get(key.encode(), [])]


def _header(request, key: str) -> str | None:
    value = request.getHeader(key)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _rangeHeader(size: int) -> str:
    """
    The C{Range} header of an upload session holding C{size} bytes, as the
    Docker registry writes it (C{0-0} for an empty session).
    """
    return f"0-{max(size - 1, 0)}"


def parseByteRange(value: str | None, size: int):
    """
    Interpret a blob GET's C{Range} header (RFC 9110, one range).

    @return: L{None} to send the whole blob, C{(first, last)} inclusive, or
        C{"unsatisfiable"}.
    """
    if not value:
        return None
    value = value.strip()
    if not value.startswith("bytes="):
        return None
    spec = value[len("bytes="):].strip()
    if "," in spec:
        return None  # several ranges: RFC 9110 lets us send the whole blob
    first, sep, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not sep or not _DIGITS.match(first) or not _DIGITS.match(last):
        return None
    if first == "" and last == "":
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return "unsatisfiable"
            if size == 0:
                return "unsatisfiable"
            return max(size - suffix, 0), size - 1
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return None
    if end is not None and end < start:
        return None  # syntactically invalid: RFC 9110 says ignore the header
    if start >= size:
        return "unsatisfiable"
    return start, size - 1 if end is None else min(end, size - 1)


def _paginate(request, items: list[str], basePath: str, key: str):
    """
    Apply C{n}/C{last} to a sorted list and build the C{Link} header.

    @return: C{(page, linkHeaderOrNone)}.
    """
    nValue = _arg(request, "n")
    last = _arg(request, "last")
    start = 0
    if last is not None:
        start = bisect.bisect_right(items, last)
    if nValue is None:
        return items[start:], None
    try:
        n = int(nValue)
    except ValueError:
        raise RegistryError("PAGINATION_NUMBER_INVALID", detail={"n": nValue[:50]})
    if n < 0:
        raise RegistryError("PAGINATION_NUMBER_INVALID", detail={"n": n})
    page = items[start:start + n]
    link = None
    if n > 0 and start + n < len(items):
        link = f'<{basePath}?n={n}&last={quote(page[-1], safe="")}>; rel="next"'
    return page, link


class RegistryAPI:
    """
    The handlers, bound to one store.

    @param store: an L{zotwist.storage.interfaces.IRegistryStore}.
    @param redirectBlobs: C{storage.redirectBlobURL}: a blob GET answers
        307 with the store's presigned URL (C{store.blobURL(name, digest)})
        instead of the bytes, so the object store serves them; HEAD is
        answered here as before.
    """

    _log = Logger()

    def __init__(self, store, authorizer=None, sender=None, redirectBlobs: bool = False):
        self._store = store
        self._sender = sender
        self._authorizer = authorizer or AllowEverything()
        self._redirectBlobs = redirectBlobs

    def _mayRead(self, request, repository: str) -> bool:
        return self._authorizer.mayRead(getattr(request, "identity", None), repository)

    # -- end-1 -------------------------------------------------------------

    async def base_GET(self, request):
        sendJSON(request, {})

    # -- catalog -------------------------------------------------------------

    async def catalog_GET(self, request):
        # An authorizer may list more than it lets read (a token's catalog
        # grant lists every repository); mayRead decides otherwise.
        mayList = getattr(self._authorizer, "mayList", self._authorizer.mayRead)
        identity = getattr(request, "identity", None)
        names = [n for n in await self._store.catalog() if mayList(identity, n)]
        page, link = _paginate(request, names, "/v2/_catalog", "repositories")
        if link:
            request.setHeader(b"Link", link.encode())
        sendJSON(request, {"repositories": page})

    # -- end-8 ---------------------------------------------------------------

    async def tags_GET(self, request, name):
        oci.validateName(name)
        tags = await self._store.listTags(name)
        page, link = _paginate(request, tags, f"/v2/{name}/tags/list", "tags")
        if link:
            request.setHeader(b"Link", link.encode())
        sendJSON(request, {"name": name, "tags": page})

    # -- end-2, end-10: blobs ---------------------------------------------------

    async def blob_GET(self, request, name, digest):
        oci.validateName(name)
        oci.parseDigest(digest)
        if self._redirectBlobs and request.method == b"GET":
            await self._redirectBlob(request, name, digest)
            return
        if request.method == b"HEAD":
            # A stat answers a HEAD: no file to open and close, and on the
            # local store no trip through the disk pool.
            reader = None
            size = await self._store.statBlob(name, digest)
            if size is None:
                raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        else:
            reader = await self._store.openBlob(name, digest)
            size = reader.size
        request.setHeader(b"Docker-Content-Digest", digest.encode())
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"ETag", f'"{digest}"'.encode())
        wanted = parseByteRange(_header(request, "Range"), size)
        if wanted == "unsatisfiable":
            if reader is not None:
                reader.close()
            raise RegistryError(
                "BLOB_UNKNOWN",
                message="requested range not satisfiable",
                status=416,
                headers={"Content-Range": f"bytes */{size}"},
            )
        if wanted is None:
            offset, length = 0, size
            request.setResponseCode(200)
        else:
            offset, length = wanted[0], wanted[1] - wanted[0] + 1
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", f"bytes {wanted[0]}-{wanted[1]}/{size}".encode())
        request.setHeader(b"Content-Length", str(length).encode())
        if reader is None or length == 0:
            if reader is not None:
                reader.close()
            request.finish()
            return
        if self._sender is not None and canSendfile(request, reader):
            await sendWithSendfile(request, reader, offset, length, self._sender)
            return
        producer = BlobProducer(request, reader, offset, length)
        try:
            await producer.start()
        except Exception:
            # The client left or the disk failed mid-body: the status line is
            # gone already, so all we can do is drop the connection.
            if not request.finished and not request._disconnected:
                request.loseConnection()
            return
        if not request._disconnected:
            request.finish()

    async def _redirectBlob(self, request, name, digest) -> None:
        """
        Answer a blob GET with 307 and the presigned URL of the blob's
        object; a blob the repository does not hold is C{BLOB_UNKNOWN}
        here, not a redirect to the object store's own 404.  A C{Range}
        header is the client's to repeat at the new location.
        """
        if await self._store.statBlob(name, digest) is None:
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        url = await self._store.blobURL(name, digest)
        sendEmpty(request, 307, {"Location": url, "Docker-Content-Digest": digest})

    async def blob_DELETE(self, request, name, digest):
        oci.validateName(name)
        oci.parseDigest(digest)
        await self._store.deleteBlob(name, digest)
        sendEmpty(request, 202, {"Docker-Content-Digest": digest})

    # -- end-4, end-11: starting uploads ------------------------------------------

    async def uploads_POST(self, request, name):
        oci.validateName(name)
        content = request.content
        if getattr(content, "rejection", None) is not None:
            raise content.rejection
        mount = _arg(request, "mount")
        digest = _arg(request, "digest")
        if mount is not None:
            oci.parseDigest(mount)
            fromName = _arg(request, "from")
            if fromName is not None:
                oci.validateName(fromName)
            size = await self._store.mountBlob(
                name, mount, fromName, lambda repository: self._mayRead(request, repository)
            )
            if size is not None:
                sendEmpty(request, 201, {
                    "Location": f"/v2/{name}/blobs/{mount}",
                    "Docker-Content-Digest": mount,
                })
                return
        elif digest is not None:
            oci.parseDigest(digest)
            if not isinstance(content, QueuedWriter):
                raise RegistryError("BLOB_UPLOAD_INVALID", message="upload body was not received")
            await self._store.commitMonolithic(name, digest, content)
            sendEmpty(request, 201, {
                "Location": f"/v2/{name}/blobs/{digest}",
                "Docker-Content-Digest": digest,
            })
            return
        algorithm = _arg(request, "digest-algorithm") or "sha256"
        oci.validateAlgorithm(algorithm)
        uploadID = await self._store.startUpload(name, algorithm)
        sendEmpty(request, 202, {
            "Location": f"/v2/{name}/blobs/uploads/{uploadID}",
            "Docker-Upload-UUID": uploadID,
            "Range": "0-0",
        })

    # -- end-5, end-6, end-13, end-14: an upload session ------------------------

    def _sessionHeaders(self, name: str, uploadID: str, size: int) -> dict:
        return {
            "Location": f"/v2/{name}/blobs/uploads/{uploadID}",
            "Docker-Upload-UUID": uploadID,
            "Range": _rangeHeader(size),
        }

    async def upload_GET(self, request, name, uploadID):
        oci.validateName(name)
        size = await self._store.uploadStatus(name, uploadID)
        sendEmpty(request, 204, self._sessionHeaders(name, uploadID, size))

    async def upload_PATCH(self, request, name, uploadID):
        oci.validateName(name)
        writer = request.content
        if writer.rejection is not None:
            raise writer.rejection
        await writer.flushed()
        size = await self._store.uploadStatus(name, uploadID)
        sendEmpty(request, 202, self._sessionHeaders(name, uploadID, size))

    async def upload_PUT(self, request, name, uploadID):
        oci.validateName(name)
        writer = request.content
        if writer.rejection is not None:
            raise writer.rejection
        digest = _arg(request, "digest")
        if digest is None:
            raise RegistryError("DIGEST_INVALID", message="the closing PUT needs ?digest=")
        oci.parseDigest(digest)
        await self._store.completeUpload(name, uploadID, digest, writer)
        sendEmpty(request, 201, {
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest,
        })

    async def upload_DELETE(self, request, name, uploadID):
        oci.validateName(name)
        await self._store.cancelUpload(name, uploadID)
        sendEmpty(request, 204)

    # -- end-3, end-7, end-9: manifests ---------------------------------------------

    async def manifest_GET(self, request, name, reference):
        oci.validateName(name)
        if request.method == b"HEAD":
            size, mediaType, digest = await self._store.statManifest(name, reference)
            body = b""
        else:
            body, mediaType, digest = await self._store.getManifest(name, reference)
            size = len(body)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", mediaType.encode())
        request.setHeader(b"Docker-Content-Digest", digest.encode())
        request.setHeader(b"ETag", f'"{digest}"'.encode())
        request.setHeader(b"Content-Length", str(size).encode())
        if body:
            request.write(body)
        request.finish()

    async def manifest_PUT(self, request, name, reference):
        oci.validateName(name)
        content = request.content
        if not isinstance(content, LimitedBuffer):
            raise RegistryError("MANIFEST_INVALID", message="manifest body was not received")
        if content.overflowed:
            raise RegistryError(
                "MANIFEST_INVALID",
                message=f"manifest larger than {MAX_MANIFEST_SIZE} bytes",
                status=413,
            )
        extraTags = _args(request, "tag")
        info = await self._store.putManifest(
            name, content.getvalue(), _header(request, "Content-Type"), reference, extraTags
        )
        request.setResponseCode(201)
        request.setHeader(b"Location", f"/v2/{name}/manifests/{info.digest}".encode())
        request.setHeader(b"Docker-Content-Digest", info.digest.encode())
        if info.subject is not None:
            request.setHeader(b"OCI-Subject", info.subject.digest.encode())
        for tag in dict.fromkeys(extraTags):
            request.responseHeaders.addRawHeader(b"OCI-Tag", tag.encode())
        request.setHeader(b"Content-Length", b"0")
        request.finish()

    async def manifest_DELETE(self, request, name, reference):
        oci.validateName(name)
        await self._store.deleteManifest(name, reference)
        sendEmpty(request, 202)

    # -- end-12: referrers ------------------------------------------------------------

    async def referrers_GET(self, request, name, digest):
        oci.validateName(name)
        oci.parseDigest(digest)
        infos = await self._store.referrers(name, digest)
        wanted = _args(request, "artifactType")
        if wanted:
            infos = [i for i in infos if i.artifactType in wanted]
            request.setHeader(b"OCI-Filters-Applied", b"artifactType")
        manifests = [i.descriptor() for i in sorted(infos, key=lambda i: i.digest)]
        sendJSON(
            request,
            {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": manifests},
            contentType=oci.OCI_INDEX.encode(),
        )


__all__ = ["RegistryAPI", "parseByteRange", "sendError"]
