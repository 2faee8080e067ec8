# -*- test-case-name: tests.test_streaming,tests.test_crash -*-
"""
The registry as a real operating-system process, and the client-side pieces
that large, slow and interrupted uploads need.

L{RegistryProcess} starts the server exactly as users do, through
C{twistd -n zot --config FILE}, with this checkout prepended to
C{PYTHONPATH} so that it works whether or not the package is installed.  It
can be killed, stopped, signalled and restarted on the same storage root, and
it reports the memory (C{VmHWM}, C{VmRSS}) and read volume (C{rchar}) of the
server process alone, which in-process tests cannot separate from the test
runner's own.

L{PatternBlob} describes arbitrarily large, deterministic, non-periodic
content without holding it in memory; L{StreamingBody} sends any sequence of
byte strings as a request body, honouring backpressure, optionally trickling
it with pauses.  The module functions at the end speak just enough of the
distribution-spec upload protocol for the streaming and crash tests; they
accept any object with C{url} and C{client} attributes, so they also work
with L{tests.support.RunningRegistry}.
"""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urljoin

from treq import collect, content
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.trial.unittest import FailTest
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from tests.support import deepMerge

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The checkout this file belongs to; put first on the server's PYTHONPATH.
REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What a client sees when the server goes away under a request: a killed
#: server resets the connection mid-request, a stopped one refuses new ones.
NETWORK_ERRORS = (
    ResponseFailed,
    RequestTransmissionFailed,
    ResponseNeverReceived,
    ConnectError,
    ConnectionLost,
    ConnectionDone,
    PotentialDataLoss,
)

OCTET_STREAM = "application/octet-stream"


def _reactorOr(reactor: Any) -> Any:
    """
    Return C{reactor}, or the global reactor if it is L{None}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor


def freePort() -> int:
    """
    Return a TCP port on 127.0.0.1 that was free a moment ago.

    A subprocess cannot report back an ephemeral port cheaply, so the test
    picks one: bind to port 0, read the port the kernel chose, close.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def waitUntil(
    predicate: Callable[[], bool],
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.02,
    reactor: Any = None,
) -> None:
    """
    Poll C{predicate} until it returns true, without blocking the reactor.

    @param message: the failure message (or a callable producing it, so that
        it can describe the state at the time of failure).
    @raise FailTest: if C{timeout} seconds pass first.
    """
    reactor = _reactorOr(reactor)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise FailTest(message() if callable(message) else message)
        await deferLater(reactor, interval)


def _procField(pid: int, fileName: str, field: str) -> int:
    """
    Read one numeric field of C{/proc/<pid>/<fileName>}.

    C{status} fields are in kB and are returned in bytes; C{io} fields are
    returned as they are (bytes).
    """
    with open(f"/proc/{pid}/{fileName}") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == field:
                parts = value.split()
                number = int(parts[0])
                if len(parts) > 1 and parts[1] == "kB":
                    number *= 1024
                return number
    raise FailTest(f"/proc/{pid}/{fileName} has no field {field}")


class RegistryProcess:
    """
    The registry running as C{twistd -n zot --config FILE} in a child process.

    The configuration and the storage root live in a fresh temporary
    directory of the test case and survive restarts, so that a test can kill
    the server and start it again on the same data.  The port is chosen once
    and kept, as a restarted production server would keep it.

    Everything the process prints (twistd logs to stdout with C{-n}) goes to
    L{logPath}, one section per start, and failures quote its tail.

    @ivar root: the storage root (C{storage.rootDirectory}).
    @ivar configPath: the zot config file the server reads.
    @ivar logPath: the file receiving the server's stdout and stderr.
    @ivar port: the TCP port on 127.0.0.1.
    @ivar url: the base URL, without a trailing slash.
    @ivar client: a treq client with a non-persistent pool, so that no
        connection outlives a server restart.
    @ivar process: the current L{subprocess.Popen}, or L{None} before the
        first start.
    @ivar starts: how many times the server was started.
    """

    def __init__(
        self,
        testCase,
        config: dict | None = None,
        keepStore: bool = True,
        reactor: Any = None,
    ) -> None:
        """
        Write the config file and register the clean-up; do not start yet.

        @param testCase: the running test; owns the temporary directory and
            the clean-up (the process is killed if still running).
        @param config: zot config keys merged over the minimal config.
        @param keepStore: if false, the storage root is deleted at clean-up
            (for tests that store gigabytes); the config and log stay.
        """
        self._keepStore = keepStore
        self._reactor = _reactorOr(reactor)
        self.base = os.path.abspath(testCase.mktemp())
        os.makedirs(self.base)
        self.root = os.path.join(self.base, "store")
        self.configPath = os.path.join(self.base, "config.json")
        self.logPath = os.path.join(self.base, "server.log")
        self.port = freePort()
        self.url = f"http://127.0.0.1:{self.port}"
        document = deepMerge(
            {
                "distSpecVersion": "1.1.1",
                "storage": {"rootDirectory": self.root},
                "http": {"address": "127.0.0.1", "port": str(self.port), "workers": 1},
                "log": {"level": "error"},
            },
            config or {},
        )
        with open(self.configPath, "w") as f:
            json.dump(document, f, indent=2)
        self.pool = HTTPConnectionPool(self._reactor, persistent=False)
        self.client = HTTPClient(Agent(self._reactor, pool=self.pool))
        self.process: subprocess.Popen | None = None
        self.starts = 0
        testCase.addCleanup(self._cleanUp)

    def command(self) -> list[str]:
        """
        The command line of the server: twistd in the foreground, no pid
        file, the C{zot} plugin with our config.
        """
        return [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "zot",
            "--config",
            self.configPath,
        ]

    def environment(self) -> dict:
        """
        The server's environment: ours, with this checkout first on
        C{PYTHONPATH} and unbuffered output so that the log is complete even
        after C{SIGKILL}.
        """
        env = dict(os.environ)
        paths = [REPOSITORY_ROOT]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def running(self) -> bool:
        """
        Whether a server process exists and has not exited.
        """
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """
        The process id of the running server.
        """
        if self.process is None:
            raise FailTest("the registry process was never started")
        return self.process.pid

    def log(self) -> str:
        """
        Everything the server printed so far, over all starts.
        """
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _logTail(self, limit: int = 6000) -> str:
        """
        The end of L{log}, for failure messages.
        """
        text = self.log()
        return text[-limit:] if len(text) > limit else text

    async def start(self, timeout: float = 20.0) -> None:
        """
        Start the server and wait until C{GET /v2/} gets any HTTP answer.

        @raise FailTest: if the process exits first or C{timeout} seconds
            pass; the message quotes the server's log.
        """
        if self.running:
            raise FailTest("the registry process is already running")
        self.starts += 1
        with open(self.logPath, "ab") as logFile:
            logFile.write(f"=== start {self.starts}: {' '.join(self.command())}\n".encode())
            logFile.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.base,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=logFile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise FailTest(
                    f"registry exited with status {code} while starting; log:\n{self._logTail()}"
                )
            try:
                response = await self.client.get(
                    self.url + "/v2/", timeout=2.0, allow_redirects=False
                )
                await content(response)
                return
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise FailTest(
                    f"registry did not answer GET /v2/ within {timeout} s; log:\n{self._logTail()}"
                )
            await deferLater(self._reactor, 0.05)

    def signal(self, signum: int) -> None:
        """
        Send C{signum} to the running server (e.g. C{SIGHUP}).
        """
        if not self.running:
            raise FailTest(f"cannot send signal {signum}: the registry is not running")
        os.kill(self.pid, signum)

    def kill(self, timeout: float = 10.0) -> int:
        """
        Kill the server with C{SIGKILL}, as a crash or the OOM killer would,
        and reap it.

        @return: the exit status (C{-9}).
        """
        if self.process is None:
            raise FailTest("the registry process was never started")
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout)

    async def wait(self, timeout: float = 20.0) -> int:
        """
        Wait, without blocking the reactor, for the server to exit.

        @return: its exit status.
        @raise FailTest: if it is still running after C{timeout} seconds.
        """
        process = self.process
        if process is None:
            raise FailTest("the registry process was never started")
        await waitUntil(
            lambda: process.poll() is not None,
            timeout,
            lambda: f"registry still running after {timeout} s; log:\n{self._logTail()}",
            reactor=self._reactor,
        )
        return process.returncode

    async def stop(self, timeout: float = 20.0) -> int:
        """
        Stop the server gracefully with C{SIGTERM} and wait for it to exit.

        After a clean shutdown twistd re-raises the signal that stopped it
        (so that its parent sees why it ended): a graceful stop exits with
        status C{-SIGTERM}, as does a process that ignored the signal
        handler.  Tell them apart with L{log}: twistd logs
        C{"Server Shut Down."} once its services have stopped.

        @return: its exit status.
        @raise FailTest: if it does not exit within C{timeout} seconds (it
            is then killed).
        """
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except FailTest:
            self.kill()
            raise

    def peakRSS(self) -> int:
        """
        The peak resident set size of the server so far, in bytes
        (C{VmHWM}).
        """
        return _procField(self.pid, "status", "VmHWM")

    def resetPeakRSS(self) -> None:
        """
        Reset the server's C{VmHWM} to its current RSS (writing C{5} to
        C{/proc/<pid>/clear_refs}), so that the next L{peakRSS} covers only
        what happened since.
        """
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def currentRSS(self) -> int:
        """
        The current resident set size of the server, in bytes (C{VmRSS}).
        """
        return _procField(self.pid, "status", "VmRSS")

    def bytesRead(self) -> int:
        """
        How many bytes the server has read so far with C{read}-family
        system calls (C{read}, C{pread}, C{readv}, C{sendfile}: C{rchar} of
        C{/proc/<pid>/io}), whether or not the page cache served them.
        Socket C{recv} is not counted, so this is (nearly) file reads only.

        A difference of two readings bounds how much of a blob a request made
        the server read.
        """
        return _procField(self.pid, "io", "rchar")

    def openFiles(self, under: str | None = None) -> list[str]:
        """
        The paths of the files the server has open (from
        C{/proc/<pid>/fd}), optionally only those under directory C{under}.

        After a request ends, however it ends, the server must let go of
        the files it used for it: tests wait on this before relying on the
        request being over on the server's side, and it exposes leaks.
        """
        prefix = None if under is None else os.path.join(os.path.abspath(under), "")
        paths = []
        directory = f"/proc/{self.pid}/fd"
        for fd in os.listdir(directory):
            try:
                target = os.readlink(os.path.join(directory, fd))
            except OSError:
                continue  # closed meanwhile
            if prefix is None or target.startswith(prefix):
                paths.append(target)
        return sorted(paths)

    async def _cleanUp(self) -> None:
        """
        Kill the server if it still runs, close the client's connections,
        and delete the storage root unless it is to be kept.
        """
        if self.running:
            self.kill()
        await self.pool.closeCachedConnections()
        if not self._keepStore:
            shutil.rmtree(self.root, ignore_errors=True)


# -- Content ------------------------------------------------------------------

_digestCache: dict[tuple[int, int], str] = {}


class PatternBlob:
    """
    Deterministic content of any size, generated piece by piece.

    The content is a 1 MiB block of seeded pseudo-random bytes repeated, each
    repetition (piece) starting with the seed and the piece number, so that
    no two pieces are equal: a server that lost, repeated or reordered a
    piece produces a different digest.  Generating is one memory copy per
    MiB; nothing larger than a piece is ever held.

    @ivar size: the length of the content in bytes.
    @ivar seed: selects the content.
    """

    PIECE = MiB

    def __init__(self, size: int, seed: int) -> None:
        """
        Describe C{size} bytes of content selected by C{seed}.
        """
        self.size = size
        self.seed = seed
        block = random.Random(f"zotwist-pattern/{seed}").randbytes(self.PIECE)
        self._tail = block[16:]

    def piece(self, index: int) -> bytes:
        """
        Return piece C{index} (1 MiB, or less at the end).
        """
        start = index * self.PIECE
        if index < 0 or start >= self.size:
            raise IndexError(index)
        data = struct.pack(">QQ", self.seed, index) + self._tail
        length = min(self.PIECE, self.size - start)
        return data if length == self.PIECE else data[:length]

    def pieces(self, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """
        Yield the bytes C{[offset, offset + length)} as consecutive strings
        of at most one piece each.
        """
        end = self.size if length is None else offset + length
        if not 0 <= offset <= end <= self.size:
            raise ValueError(f"range {offset}-{end} outside 0-{self.size}")
        position = offset
        while position < end:
            index, within = divmod(position, self.PIECE)
            data = self.piece(index)[within : within + (end - position)]
            position += len(data)
            yield data

    def read(self, offset: int, length: int) -> bytes:
        """
        Return the bytes C{[offset, offset + length)} as one string.
        """
        return b"".join(self.pieces(offset, length))

    def digest(self) -> str:
        """
        Return C{sha256:<hex>} of the whole content.

        This reads all of it (about 3.5 s per GiB here); the result is cached
        per C{(seed, size)} for the life of the test run.  Call it through
        C{deferToThread} to overlap it with other work: C{hashlib} releases
        the GIL while hashing large strings.
        """
        key = (self.seed, self.size)
        if key not in _digestCache:
            hasher = hashlib.sha256()
            for data in self.pieces():
                hasher.update(data)
            _digestCache[key] = "sha256:" + hasher.hexdigest()
        return _digestCache[key]


def sha256Digest(data: bytes) -> str:
    """
    Return C{sha256:<hex>} of C{data}.
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


def splitBytes(data: bytes, size: int) -> list[bytes]:
    """
    Cut C{data} into consecutive pieces of C{size} bytes (the last may be
    shorter).
    """
    return [data[i : i + size] for i in range(0, len(data), size)]


@implementer(IBodyProducer, IPushProducer)
class StreamingBody:
    """
    A request body that writes a sequence of byte strings to its consumer as
    the consumer can take them, optionally pausing between strings.

    It is a push producer: the transport pauses it when its buffer is full
    and resumes it when the buffer drains, so at most about one piece is
    buffered on the client side whatever the body's size.  Writing happens
    in reactor turns of its own (never inside C{resumeProducing}), so the
    transport is never re-entered.

    Tests that need to act in the middle of an upload wait on
    L{whenSent}.

    @ivar length: the body length announced in C{Content-Length}, or
        L{UNKNOWN_LENGTH} for a chunked request body.
    @ivar sent: how many bytes were handed to the consumer so far.
    """

    def __init__(
        self,
        pieces: Iterable[bytes],
        length: int | object = UNKNOWN_LENGTH,
        delay: float = 0.0,
        reactor: Any = None,
    ) -> None:
        """
        @param pieces: the body, in pieces; consumed lazily.
        @param length: the exact total length, or L{UNKNOWN_LENGTH}.
        @param delay: seconds to wait after each piece (a slow client).
        """
        self._pieces = iter(pieces)
        self.length = length
        self._delay = delay
        self._reactor = _reactorOr(reactor)
        self._consumer = None
        self._done: Deferred | None = None
        self._call = None
        self._paused = False
        self._stopped = False
        self._finished = False
        self._waiters: list[tuple[int, Deferred]] = []
        self.sent = 0

    def startProducing(self, consumer) -> Deferred:
        """
        Start writing to C{consumer}.

        @return: a L{Deferred} that fires when every piece was written; it
            never fires if the producer is stopped first.
        """
        self._consumer = consumer
        self._done = Deferred(lambda d: self.stopProducing())
        self._schedule(0)
        return self._done

    def _schedule(self, delay: float) -> None:
        """
        Arrange for L{_step} to run after C{delay} seconds, unless it is
        already arranged.
        """
        if self._call is None and not (self._stopped or self._finished):
            self._call = self._reactor.callLater(delay, self._step)

    def _step(self) -> None:
        """
        Write pieces until paused, stopped, finished or (with a delay) after
        one piece.
        """
        self._call = None
        while not (self._paused or self._stopped):
            try:
                data = next(self._pieces)
            except StopIteration:
                self._finished = True
                self._failWaiters()
                self._done.callback(None)
                return
            self._consumer.write(data)
            self.sent += len(data)
            self._notify()
            if self._delay:
                self._schedule(self._delay)
                return

    def _notify(self) -> None:
        """
        Fire (in a later reactor turn) the L{whenSent} waiters whose count
        was reached.
        """
        remaining = []
        for count, waiter in self._waiters:
            if self.sent >= count:
                self._reactor.callLater(0, waiter.callback, self.sent)
            else:
                remaining.append((count, waiter))
        self._waiters = remaining

    def whenSent(self, count: int) -> Deferred:
        """
        Return a L{Deferred} firing with L{sent} once at least C{count} bytes
        were written, or failing with L{ConnectionLost} if the producer is
        stopped (or finishes) before that.
        """
        waiter: Deferred = Deferred()
        self._waiters.append((count, waiter))
        if self._stopped or self._finished:
            self._failWaiters()
        else:
            self._notify()
        return waiter

    def _failWaiters(self) -> None:
        """
        Fail the waiters that can no longer be satisfied.
        """
        self._notify()
        waiters, self._waiters = self._waiters, []
        for count, waiter in waiters:
            waiter.errback(ConnectionLost(f"body stopped after {self.sent} of {count} bytes"))

    def pauseProducing(self) -> None:
        """
        Stop writing until L{resumeProducing}.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        Continue writing, in a later reactor turn.
        """
        self._paused = False
        if self._consumer is not None:
            self._schedule(0)

    def stopProducing(self) -> None:
        """
        Stop for good (the connection went away); the L{startProducing}
        L{Deferred} never fires.
        """
        self._stopped = True
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._failWaiters()


# -- The upload protocol --------------------------------------------------------


def header(response, name: str) -> str | None:
    """
    Return the first value of header C{name} of C{response}, or L{None}.
    """
    values = response.headers.getRawHeaders(name.encode("ascii"))
    return values[0].decode("latin-1") if values else None


def resolve(registry, location: str) -> str:
    """
    Resolve a C{Location} (absolute or relative) against the registry URL.
    """
    return urljoin(registry.url + "/", location)


def withQuery(url: str, **params: str) -> str:
    """
    Append query parameters to C{url}, which may already have some (the
    spec lets an upload location carry its own).
    """
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return url + ("&" if "?" in url else "?") + query


def parseRange(value: str | None) -> int:
    """
    Return the number of bytes an upload C{Range: 0-<end>} header reports
    (C{end + 1}).

    @raise FailTest: if the header is missing or malformed.
    """
    match = re.fullmatch(r"0-(\d+)", value or "")
    if match is None:
        raise FailTest(f"expected a Range header of the form 0-<end>, got {value!r}")
    return int(match.group(1)) + 1


async def expect(response, status: int, what: str) -> bytes:
    """
    Read the (small) body of C{response} and check its status.

    @return: the body.
    @raise FailTest: naming C{what}, the status and the body otherwise.
    """
    body = await content(response)
    if response.code != status:
        raise FailTest(f"{what}: expected {status}, got {response.code}: {body[:2000]!r}")
    return body


async def request(registry, method: str, url: str, **kwargs: Any):
    """
    Send one request with the registry's client, never following redirects.
    """
    kwargs.setdefault("allow_redirects", False)
    return await registry.client.request(method, url, **kwargs)


async def startUpload(registry, repo: str) -> str:
    """
    Open an upload session (C{POST /v2/<repo>/blobs/uploads/}, 202).

    @return: the absolute upload location.
    """
    response = await request(registry, "POST", f"{registry.url}/v2/{repo}/blobs/uploads/")
    await expect(response, 202, f"POST /v2/{repo}/blobs/uploads/")
    location = header(response, "Location")
    if not location:
        raise FailTest("upload POST answered 202 without a Location")
    return resolve(registry, location)


async def putMonolithic(registry, repo: str, body: Any, digest: str) -> Any:
    """
    Push a blob with POST then one C{PUT <location>?digest=} carrying the
    whole body.

    @param body: bytes or an L{IBodyProducer} with a known length.
    @return: the PUT response, its body read (C{201} expected; the caller
        checks).
    """
    location = await startUpload(registry, repo)
    response = await request(
        registry,
        "PUT",
        withQuery(location, digest=digest),
        data=body,
        headers={"Content-Type": OCTET_STREAM},
    )
    await content(response)
    return response


async def pushMonolithic(registry, repo: str, body: Any, digest: str) -> None:
    """
    L{putMonolithic} and require C{201} with the digest echoed.
    """
    response = await putMonolithic(registry, repo, body, digest)
    if response.code != 201:
        raise FailTest(f"monolithic PUT of {digest} answered {response.code}")
    echoed = header(response, "Docker-Content-Digest")
    if echoed is not None and echoed != digest:
        raise FailTest(f"PUT of {digest} echoed Docker-Content-Digest {echoed}")


async def pushSinglePost(registry, repo: str, data: bytes, digest: str) -> None:
    """
    Push a blob with a single C{POST ?digest=} carrying the body and
    require 201; if the registry answers 202 instead (the spec allows it),
    fall back to a monolithic PUT to the session, as clients do.
    """
    response = await request(
        registry,
        "POST",
        withQuery(f"{registry.url}/v2/{repo}/blobs/uploads/", digest=digest),
        data=data,
        headers={"Content-Type": OCTET_STREAM},
    )
    body = await content(response)
    if response.code == 201:
        return
    if response.code != 202:
        raise FailTest(f"single POST of {digest} answered {response.code}: {body[:2000]!r}")
    location = header(response, "Location")
    if not location:
        raise FailTest("single POST answered 202 without a Location")
    response = await request(
        registry,
        "PUT",
        withQuery(resolve(registry, location), digest=digest),
        data=data,
        headers={"Content-Type": OCTET_STREAM},
    )
    await expect(response, 201, f"PUT after single POST of {digest}")


async def patchChunk(registry, location: str, data: Any, start: int, length: int) -> str:
    """
    Send one chunk with C{Content-Range: start-end} and require 202 with
    C{Range: 0-<start + length - 1>}.

    @param data: bytes or an L{IBodyProducer} of exactly C{length} bytes.
    @return: the next (absolute) upload location.
    """
    response = await request(
        registry,
        "PATCH",
        location,
        data=data,
        headers={
            "Content-Type": OCTET_STREAM,
            "Content-Range": f"{start}-{start + length - 1}",
        },
    )
    await expect(response, 202, f"PATCH {start}-{start + length - 1}")
    reported = parseRange(header(response, "Range"))
    if reported != start + length:
        raise FailTest(f"PATCH up to {start + length} bytes reported Range for {reported}")
    return resolve(registry, header(response, "Location") or location)


async def finishUpload(registry, location: str, digest: str) -> Any:
    """
    Close an upload session with an empty C{PUT <location>?digest=}.

    @return: the response, its body read (the caller checks for 201).
    """
    response = await request(
        registry,
        "PUT",
        withQuery(location, digest=digest),
        headers={"Content-Type": OCTET_STREAM},
    )
    await content(response)
    return response


async def pullDigest(
    registry, repo: str, digest: str, headers: dict | None = None
) -> tuple[str, int, Any]:
    """
    GET a blob, hashing it as it streams in (never held whole).

    @return: C{(sha256 digest of the body, body length, response)}.
    """
    response = await request(
        registry,
        "GET",
        f"{registry.url}/v2/{repo}/blobs/{digest}",
        headers=headers,
        unbuffered=True,
    )
    hasher = hashlib.sha256()
    count = 0

    def received(data: bytes) -> None:
        nonlocal count
        hasher.update(data)
        count += len(data)

    await collect(response, received)
    if response.code != 200:
        raise FailTest(f"GET blob {digest} answered {response.code}")
    return "sha256:" + hasher.hexdigest(), count, response


def filesUnder(root: str) -> dict[str, int]:
    """
    Map every regular file under C{root} (relative path) to its size.
    """
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                found[os.path.relpath(path, root)] = os.lstat(path).st_size
            except FileNotFoundError:
                pass
    return found


def storedSince(root: str, before: dict[str, int]) -> int:
    """
    How many bytes the files under C{root} gained since the snapshot
    C{before} (from L{filesUnder}): new files count whole, grown files by
    their growth.

    The server writes an upload body to disk as it arrives, under the
    storage root, so this tells how much of a body it has received.
    """
    now = filesUnder(root)
    return sum(max(0, size - before.get(path, 0)) for path, size in now.items())
