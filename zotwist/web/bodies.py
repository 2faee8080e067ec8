# -*- test-case-name: tests.test_bodies -*-
"""
Choosing where a request body goes, before it arrives.

Twisted reads a whole body into C{request.content} before any resource sees
the request.  L{RegistryRequest} replaces that file at C{gotLength} time (when
the headers are in, the body not yet) with what fits the endpoint: a blob
upload streams into storage through an L{IUploadWriter}; a manifest goes to
a L{LimitedBuffer} that stops storing past the manifest size limit; anything
else is kept only up to a small bound.
"""

import time
from io import BytesIO
from urllib.parse import parse_qs

from twisted.web import server

from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.manifests import MAX_MANIFEST_SIZE
from zotwist.storage.writers import DiscardWriter, QueuedWriter
from zotwist.web.routes import matchRoute

#: Bodies of requests that need none are kept up to this size.
SMALL_BODY = 64 * 1024
#: How much the transport reads at once while an upload body arrives: four
#: times Twisted's 64 KiB, and just under the allocator's mmap threshold
#: (L{zotwist.memory.MMAP_THRESHOLD}), so the read buffers are recycled from
#: the heap instead of being mapped, page-faulted in and unmapped on every
#: read (1 MiB reads cost the reactor thread a third more CPU per MB).
UPLOAD_READ_SIZE = 256 * 1024 - 4096


class LimitedBuffer:
    """
    An in-memory body that keeps at most C{limit} bytes and remembers that
    more arrived (the handler then answers 413).
    """

    def __init__(self, limit: int):
        self._buffer = BytesIO()
        self._limit = limit
        self.received = 0
        self.rejection = None
        self.transport = None

    @property
    def overflowed(self) -> bool:
        return self.received > self._limit

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.received <= self._limit:
            self._buffer.write(data)

    def tell(self) -> int:
        return self.received

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buffer.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)

    def getvalue(self) -> bytes:
        return self._buffer.getvalue()

    def close(self) -> None:
        self._buffer = BytesIO()


def parseContentRange(value: str | None) -> tuple[int, int] | None:
    """
    Parse an upload chunk's C{Content-Range: <start>-<end>} (inclusive; a
    C{bytes } prefix is tolerated).

    @raise ValueError: when malformed.
    """
    if value is None:
        return None
    text = value.strip()
    if text.startswith("bytes "):
        text = text[6:].split("/", 1)[0]
    start, sep, end = text.partition("-")
    if not sep or not start.isdigit() or not end.isdigit():
        raise ValueError(value)
    first, last = int(start), int(end)
    if last < first:
        raise ValueError(value)
    return first, last


def _rangeError(message: str) -> RegistryError:
    return RegistryError("BLOB_UPLOAD_INVALID", message=message, status=416)


_UNMATCHED = object()


def chooseBody(store, method: bytes, uri: bytes, headers, length: int | None,
               route=_UNMATCHED):
    """
    Pick the file-like object a request's body is written to.

    @param uri: the request URI as received (path and query).
    @param headers: the request's L{twisted.web.http_headers.Headers}.
    @param length: the announced Content-Length, or L{None} (chunked).
    @param route: the path's L{zotwist.web.routes.Route} (or L{None}) when
        the caller matched it already.
    """
    path, _, query = uri.partition(b"?")
    if route is _UNMATCHED:
        route = matchRoute(path)
    verb = method.decode("ascii", "replace").upper()
    if route is None:
        return LimitedBuffer(SMALL_BODY)
    try:
        if route.name == "manifest" and verb == "PUT":
            return LimitedBuffer(MAX_MANIFEST_SIZE)
        if route.name == "uploads" and verb == "POST":
            args = parse_qs(query.decode("ascii", "replace"))
            digest = args.get("digest", [None])[0]
            if digest is None or "mount" in args:
                return DiscardWriter()
            name = oci.validateName(route.params["name"])
            algorithm, _ = oci.parseDigest(digest)
            return store.writerForMonolithic(name, algorithm, length)
        if route.name == "upload" and verb in ("PATCH", "PUT"):
            name = oci.validateName(route.params["name"])
            try:
                contentRange = parseContentRange(_header(headers, b"content-range"))
            except ValueError:
                return DiscardWriter(_rangeError("malformed Content-Range"))
            start = None
            if contentRange is not None:
                start = contentRange[0]
                if length is not None and contentRange[1] - contentRange[0] + 1 != length:
                    return DiscardWriter(
                        _rangeError("Content-Range does not agree with Content-Length")
                    )
            return store.writerForSession(name, route.params["uploadID"], start, length)
    except RegistryError as e:
        return DiscardWriter(e)
    return LimitedBuffer(SMALL_BODY)


def _header(headers, name: bytes) -> str | None:
    values = headers.getRawHeaders(name)
    if not values:
        return None
    return values[0].decode("latin-1")


class RegistryRequest(server.Request):
    """
    A request whose body goes where L{chooseBody} says, as it arrives.

    The request line is parsed by the channel before the headers end; it is
    kept on the channel's C{_command}/C{_path}, which is the only place it is
    known at C{gotLength} time.

    @ivar startedAt: the monotonic time the request line arrived, for the
        access log's duration.
    """

    #: C{(path, route)} as matched when the headers arrived, or L{None}.
    matchedRoute = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.startedAt = time.monotonic()

    def gotLength(self, length):
        site = getattr(self.channel, "site", None)
        store = getattr(site, "store", None)
        method = getattr(self.channel, "_command", None)
        uri = getattr(self.channel, "_path", None)
        if store is None or method is None or uri is None:
            server.Request.gotLength(self, length)
            return
        path = uri.partition(b"?")[0]
        route = matchRoute(path)
        # The resource matches the same path again; keep the answer.
        self.matchedRoute = (path, route)
        try:
            content = chooseBody(store, method, uri, self.requestHeaders, length, route)
        except OSError as e:
            self._log.failure("Could not prepare an upload")
            content = DiscardWriter(
                RegistryError(
                    "BLOB_UPLOAD_INVALID", message=f"storage error: {e.strerror}", status=500
                )
            )
        transport = self.channel.transport
        content.transport = transport
        if isinstance(content, QueuedWriter):
            # Large bodies: read the socket in bigger gulps than Twisted's
            # 64 KiB, so a gigabyte costs fewer reactor iterations and
            # fewer thread-pool hand-offs.
            transport.bufferSize = UPLOAD_READ_SIZE
        self.content = content

    def requestReceived(self, command, path, version):
        """
        The body is in: give the connection back its normal read size, so
        the small requests that follow on it do not allocate 252 KiB per read.
        """
        transport = getattr(self.channel, "transport", None)
        if transport is not None and "bufferSize" in vars(transport):
            del transport.bufferSize
        super().requestReceived(command, path, version)
