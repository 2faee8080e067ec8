# -*- test-case-name: tests.test_sendfile -*-
"""
Zero-copy blob downloads with C{sendfile(2)}.

A pull through L{zotwist.web.producer.BlobProducer} copies every byte twice
in user space (a C{pread} into a Python object, a C{send} out of it).  On a
plain TCP connection the kernel can move the page-cache pages to the socket
itself: this module writes the response headers and then calls C{sendfile}
in a worker thread until the range is sent, polling the (non-blocking)
socket for room between calls.

Twisted owns the socket, so the hand-over is careful:
 - it is only attempted when the transport's own write buffer is empty
   (nothing of an earlier response is still queued), on HTTP/1.x over a
   plain TCP transport (TLS goes through the producer);
 - the thread works on a C{dup} of the socket's descriptor, so even if
   Twisted closes its own descriptor meanwhile, the thread never writes to
   a descriptor number the process has reused for something else;
 - the request is marked as having written its headers before the thread
   starts, so nothing else writes to the socket while it runs.
"""

import errno
import os
import select

from twisted.internet import tcp
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger

_log = Logger()

#: How long a download may make no progress before it is abandoned.
STALL_TIMEOUT = 120.0
#: Bytes per sendfile call: the thread checks for cancellation in between.
_STEP = 8 * 1024 * 1024


def _transportOf(request):
    channel = getattr(request, "channel", None)
    return getattr(channel, "transport", None)


def canSendfile(request, reader) -> bool:
    """
    Whether this response may bypass Twisted's transport.
    """
    if getattr(reader, "fileno", None) is None:
        return False
    if request.clientproto not in (b"HTTP/1.1", b"HTTP/1.0"):
        return False
    transport = _transportOf(request)
    if not isinstance(transport, tcp.Connection) or ISSLTransport.providedBy(transport):
        return False
    # Anything still queued in Twisted's buffer must go out before our bytes.
    if getattr(transport, "dataBuffer", b"x") or getattr(transport, "_tempDataBuffer", [b"x"]):
        return False
    # The channel registers itself as the transport's producer; any other
    # producer would be writing a response of its own.
    if getattr(transport, "producer", None) not in (None, request.channel):
        return False
    return True


def _headerBlock(request) -> bytes:
    """
    The status line and headers, formatted as L{HTTPChannel.writeHeaders}
    formats them.
    """
    parts = [
        request.clientproto, b" ", b"%d" % (request.code,), b" ", request.code_message, b"\r\n"
    ]
    for name, values in request.responseHeaders.getAllRawHeaders():
        for value in values:
            parts.extend((name, b": ", value, b"\r\n"))
    parts.append(b"\r\n")
    return b"".join(parts)


class SendCancelled(Exception):
    """
    The download was abandoned (client gone or stalled).
    """


def _waitWritable(sock: int, cancelled) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLOUT | select.POLLERR | select.POLLHUP)
    waited = 0.0
    while not cancelled():
        events = poller.poll(500)
        if events:
            for _, event in events:
                if event & (select.POLLERR | select.POLLHUP):
                    raise SendCancelled("connection closed")
            return
        waited += 0.5
        if waited >= STALL_TIMEOUT:
            raise SendCancelled("client stalled")
    raise SendCancelled("cancelled")


def sendBlocking(
    sock: int, header: bytes, fileFD: int, offset: int, length: int, cancelled
) -> int:
    """
    Blocking: write C{header}, then C{length} bytes of C{fileFD} from
    C{offset}, to the non-blocking socket C{sock}.  Closes C{sock}.

    @return: the number of body bytes sent.
    """
    sent = 0
    try:
        view = memoryview(header)
        while view:
            try:
                n = os.write(sock, view)
            except BlockingIOError:
                _waitWritable(sock, cancelled)
                continue
            view = view[n:]
        while sent < length:
            if cancelled():
                raise SendCancelled("cancelled")
            try:
                n = os.sendfile(sock, fileFD, offset + sent, min(_STEP, length - sent))
            except BlockingIOError:
                _waitWritable(sock, cancelled)
                continue
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET):
                    raise SendCancelled("connection closed")
                raise
            if n == 0:
                raise OSError("blob file is shorter than its recorded size")
            sent += n
        return sent
    finally:
        os.close(sock)


async def sendWithSendfile(request, reader, offset: int, length: int, runner) -> None:
    """
    Send the prepared response (status and headers already set on
    C{request}) and C{length} bytes of C{reader} from C{offset}.

    The clean-up (closing the file, finishing or dropping the request) is
    tied to the thread's end, not to this coroutine: if the handler is
    cancelled because the client left, the thread is told to stop and the
    file stays open until it has.
    """
    transport = _transportOf(request)
    sock = os.dup(transport.fileno())
    header = _headerBlock(request)
    # From here on Twisted must believe the headers are out: nothing else
    # may write to this socket while the thread does.
    request.startedWriting = 1
    # Do not read from the connection while the thread sends: a client
    # that closes as soon as it has every byte would otherwise be seen as
    # gone before the request is finished (and logged as cut off).  Reading
    # resumes when the request is finished (the channel asks for the next
    # request) or the connection is dropped.
    transport.stopReading()
    stop = []
    request.notifyFinish().addErrback(lambda failure: stop.append(failure))
    sending = runner.run(
        sendBlocking, sock, header, reader.fileno(), offset, length, lambda: bool(stop)
    )

    def sent(count):
        reader.close()
        request.sentLength = count
        if not request._disconnected:
            request.finish()
            if transport.connected and not transport.disconnecting:
                transport.startReading()

    def failed(failure):
        reader.close()
        if not failure.check(SendCancelled):
            _log.failure("sendfile failed", failure)
        if not request._disconnected:
            transport.loseConnection()

    sending.addCallbacks(sent, failed)
    finished = Deferred()
    sending.addBoth(lambda _: finished.called or finished.callback(None))
    try:
        await finished
    except CancelledError:
        stop.append("cancelled")
