"""
Tests for L{zotwist.ops.lifecycle} and L{zotwist.ops.drain}: a graceful
C{SIGTERM} under twistd (exit status 0, uploads in flight finished or cut
at the bound and resumable after a restart), systemd notification, the
ordered stop, and the start-up scan's progress.
"""

import os
import shutil
import signal
import socket
import tempfile
import time

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.procsupport import (
    NETWORK_ERRORS,
    OCTET_STREAM,
    KiB,
    MiB,
    PatternBlob,
    RegistryProcess,
    StreamingBody,
    expect,
    finishUpload,
    header,
    parseRange,
    patchChunk,
    pullDigest,
    request,
    startUpload,
    waitUntil,
)
from zotwist.ops.drain import ConnectionTracker
from zotwist.ops.lifecycle import OrderedMultiService, SignalHandlers, notifySystemd
from zotwist.storage.local import LocalStore
from zotwist.threads import InlineRunner


class _Process(RegistryProcess):
    """
    A registry process with extra C{twistd zot} options and environment.
    """

    def __init__(self, testCase, config=None, options=(), environ=None):
        super().__init__(testCase, config)
        self._options = list(options)
        self._environ = dict(environ or {})

    def command(self):
        """
        The usual command line, plus the extra options.
        """
        return super().command() + self._options

    def environment(self):
        """
        The usual environment, plus the extra variables.
        """
        env = super().environment()
        env.update(self._environ)
        return env


async def uploadStatus(registry, location: str) -> int:
    """
    The bytes an upload session holds (C{GET} its location, 204 + Range).
    """
    response = await request(registry, "GET", location)
    await expect(response, 204, "GET upload status")
    return parseRange(header(response, "Range"))


class GracefulStopTests(TestCase):
    """
    C{SIGTERM} to C{twistd zot}.
    """

    timeout = 60

    async def test_exitZeroAndNotify(self):
        """
        Under a C{Type=notify} unit the registry tells systemd it is ready
        once it answers, says it is stopping on C{SIGTERM}, and a clean stop
        exits with status 0 (not "killed by SIGTERM").
        """
        # AF_UNIX paths are short (108 bytes): not under _trial_temp.
        base = tempfile.mkdtemp(prefix="zotwist-notify-", dir="/tmp")
        self.addCleanup(shutil.rmtree, base, True)
        address = os.path.join(base, "notify")
        sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sink.bind(address)
        sink.setblocking(False)
        self.addCleanup(sink.close)
        registry = _Process(self, environ={"NOTIFY_SOCKET": address})
        await registry.start()
        messages = []

        def received():
            try:
                while True:
                    messages.append(sink.recv(4096).decode())
            except BlockingIOError:
                pass
            return messages

        await waitUntil(lambda: "READY=1" in received(), 5, lambda: f"got {messages}")
        self.assertEqual(await registry.stop(), 0)
        self.assertIn("Server Shut Down.", registry.log())
        self.assertIn("STOPPING=1", received())

    async def test_uploadInFlightFinishes(self):
        """
        A PATCH still arriving when C{SIGTERM} comes is received whole and
        answered; meanwhile the port takes no new connection; then the
        process exits 0, and after a restart the upload is completed.
        """
        registry = _Process(self, {"log": {"level": "info"}})
        await registry.start()
        blob = PatternBlob(8 * 64 * KiB, seed=11)
        location = await startUpload(registry, "drain/finish")
        body = StreamingBody(
            (blob.read(i * 64 * KiB, 64 * KiB) for i in range(8)),
            length=blob.size, delay=0.15,
        )
        patch = ensureDeferred(request(
            registry, "PATCH", location, data=body,
            headers={"Content-Type": OCTET_STREAM, "Content-Range": f"0-{blob.size - 1}"},
        ))
        await body.whenSent(128 * KiB)
        registry.signal(signal.SIGTERM)
        await waitUntil(lambda: "Closed)" in registry.log(), 5, registry.log)
        with self.assertRaises(NETWORK_ERRORS):
            await request(registry, "GET", registry.url + "/livez", timeout=2)
        response = await patch
        await expect(response, 202, "PATCH in flight during SIGTERM")
        self.assertEqual(parseRange(header(response, "Range")), blob.size)
        self.assertEqual(await registry.wait(), 0)
        self.assertIn("Waiting up to 30 s for 1 requests in flight", registry.log())

        await registry.start()
        self.assertEqual(await uploadStatus(registry, location), blob.size)
        response = await finishUpload(registry, location, blob.digest())
        self.assertEqual(response.code, 201)
        digest, size, _ = await pullDigest(registry, "drain/finish", blob.digest())
        self.assertEqual((digest, size), (blob.digest(), blob.size))

    async def test_uploadCutAtBoundResumes(self):
        """
        A PATCH that would outlast the drain bound (C{--drain-timeout 1})
        is cut off when the bound runs out, the process exits 0, and after
        a restart the client resumes: C{GET} the session for what arrived,
        C{PATCH} the rest, C{PUT} the digest; the blob is exact.
        """
        registry = _Process(self, {"log": {"level": "info"}}, options=["--drain-timeout", "1"])
        await registry.start()
        blob = PatternBlob(2 * MiB, seed=12)
        location = await startUpload(registry, "drain/cut")
        pieces = blob.size // (64 * KiB)
        body = StreamingBody(
            (blob.read(i * 64 * KiB, 64 * KiB) for i in range(pieces)),
            length=blob.size, delay=0.2,
        )
        patch = ensureDeferred(request(
            registry, "PATCH", location, data=body,
            headers={"Content-Type": OCTET_STREAM, "Content-Range": f"0-{blob.size - 1}"},
        ))
        await body.whenSent(256 * KiB)
        started = time.monotonic()
        registry.signal(signal.SIGTERM)
        with self.assertRaises(NETWORK_ERRORS):
            await patch
        self.assertEqual(await registry.wait(), 0)
        self.assertLess(time.monotonic() - started, 8)
        self.assertIn("Cut off 1 connections still busy after 1 s", registry.log())

        await registry.start()
        received = await uploadStatus(registry, location)
        self.assertGreaterEqual(received, 256 * KiB)
        self.assertLess(received, blob.size)
        rest = blob.read(received, blob.size - received)
        location = await patchChunk(registry, location, rest, received, len(rest))
        response = await finishUpload(registry, location, blob.digest())
        self.assertEqual(response.code, 201)
        digest, size, _ = await pullDigest(registry, "drain/cut", blob.digest())
        self.assertEqual((digest, size), (blob.digest(), blob.size))


class _FakeReactor(Clock):
    """
    A clock that records C{stop}, runs C{callFromThread} at once, and
    says it is running.
    """

    running = True

    def __init__(self):
        super().__init__()
        self.stops = 0

    def stop(self):
        self.stops += 1

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class _Checks:
    """
    A stand-in for L{zotwist.ops.health.HealthChecks}.
    """

    stopping = False


class SignalHandlerTests(SynchronousTestCase):
    """
    L{SignalHandlers} with a fake reactor; the handlers are installed for
    real and restored at the end.
    """

    def setUp(self):
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))

    def test_terminate(self):
        """
        The first C{SIGTERM} stops the reactor (so the exit status is 0) and
        fails readiness; the second cuts the requests in flight.
        """
        reactor = _FakeReactor()
        aborted = []
        checks = _Checks()
        handlers = SignalHandlers(reactor, abort=lambda: aborted.append(1), healthChecks=checks)
        handlers.startService()
        os.kill(os.getpid(), signal.SIGTERM)
        self.assertEqual((reactor.stops, checks.stopping, aborted), (1, True, []))
        os.kill(os.getpid(), signal.SIGTERM)
        self.assertEqual((reactor.stops, aborted), (1, [1]))

    def test_hangUp(self):
        """
        C{SIGHUP} calls the reload; a failing reload is logged, and after
        the service stops C{SIGHUP} is ignored (its default would kill the
        process mid-shutdown).
        """
        reactor = _FakeReactor()
        calls = []

        def reload():
            calls.append(1)
            raise RuntimeError("bad reload")

        handlers = SignalHandlers(reactor, reload=reload)
        handlers.startService()
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(calls, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        handlers.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)

    def test_installedAfterStartup(self):
        """
        Before the reactor runs, the handlers wait for the end of start-up
        (after the reactor installed its own).
        """
        reactor = _FakeReactor()
        reactor.running = False
        triggers = []
        reactor.addSystemEventTrigger = lambda *args: triggers.append(args)
        handlers = SignalHandlers(reactor)
        handlers.startService()
        self.assertEqual([t[:2] for t in triggers], [("after", "startup")])


class _Recorder(Service):
    """
    A service whose stop takes a L{Deferred} the test fires.
    """

    def __init__(self, name, log):
        self.setName(name)
        self._log = log
        self.pending = None

    def stopService(self):
        super().stopService()
        self._log.append(self.name)
        self.pending = Deferred()
        return self.pending


class OrderedStopTests(SynchronousTestCase):
    """
    L{OrderedMultiService}.
    """

    def test_reverseAndSequential(self):
        """
        Children stop in reverse order, each only after the one before has
        finished stopping.
        """
        top = OrderedMultiService()
        log = []
        children = [_Recorder(name, log) for name in ("logs", "threads", "http")]
        for child in children:
            child.setServiceParent(top)
        top.startService()
        done = top.stopService()
        self.assertEqual(log, ["http"])
        children[2].pending.callback(None)
        self.assertEqual(log, ["http", "threads"])
        children[1].pending.callback(None)
        children[0].pending.callback(None)
        self.assertEqual(log, ["http", "threads", "logs"])
        self.successResultOf(done)


class _Request:
    """
    A request in flight, as the drain looks at it.
    """

    def __init__(self):
        self.finished = False
        self.startedWriting = False
        from twisted.web.http_headers import Headers

        self.responseHeaders = Headers()


class _Transport:
    """
    A transport that records an abort and drops its channel.
    """

    def __init__(self, channel, tracker):
        self._channel, self._tracker = channel, tracker
        self.aborted = False

    def abortConnection(self):
        self.aborted = True
        self._tracker.remove(self._channel)


class _Channel:
    """
    An HTTP channel, idle or with one request in flight.
    """

    def __init__(self, tracker, busy):
        self.requests = [_Request()] if busy else []
        self.persistent = True
        self.closed = False
        self.transport = _Transport(self, tracker)
        self._tracker = tracker

    def loseConnection(self):
        self.closed = True
        self._tracker.remove(self)


class DrainTests(SynchronousTestCase):
    """
    L{ConnectionTracker.drain} on a clock.
    """

    def test_idleClosedBusyWaitedFor(self):
        """
        Idle connections close at once; a busy one is marked to close after
        its answer (C{Connection: close}) and the drain ends when it is gone.
        """
        tracker = ConnectionTracker()
        idle, busy = _Channel(tracker, False), _Channel(tracker, True)
        tracker.add(idle)
        tracker.add(busy)
        clock = Clock()
        done = tracker.drain(clock, timeout=10)
        self.assertTrue(idle.closed)
        self.assertFalse(busy.persistent)
        self.assertEqual(
            busy.requests[0].responseHeaders.getRawHeaders(b"connection"), [b"close"]
        )
        self.assertNoResult(done)
        busy.requests[0].finished = True
        tracker.remove(busy)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(done), 0)
        self.assertFalse(busy.transport.aborted)

    def test_boundAborts(self):
        """
        A connection still busy when the bound runs out is aborted.
        """
        tracker = ConnectionTracker()
        busy = _Channel(tracker, True)
        tracker.add(busy)
        clock = Clock()
        done = tracker.drain(clock, timeout=1)
        clock.pump([0.05] * 19)
        self.assertNoResult(done)
        clock.pump([0.05] * 4)
        self.assertTrue(busy.transport.aborted)
        clock.advance(0.05)
        self.assertEqual(self.successResultOf(done), 1)


class NotifyTests(SynchronousTestCase):
    """
    L{notifySystemd}.
    """

    def test_sends(self):
        """
        The state goes as one datagram to C{$NOTIFY_SOCKET}, also in the
        abstract namespace (C{@name}); without the variable nothing is sent.
        """
        base = tempfile.mkdtemp(prefix="zotwist-notify-", dir="/tmp")
        self.addCleanup(shutil.rmtree, base, True)
        for address in (os.path.join(base, "notify"), f"@zotwist-test-{os.getpid()}"):
            sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sink.bind(address.replace("@", "\0", 1))
            self.addCleanup(sink.close)
            self.assertTrue(notifySystemd("READY=1", {"NOTIFY_SOCKET": address}))
            self.assertEqual(sink.recv(100), b"READY=1")
        self.assertFalse(notifySystemd("READY=1", {}))


class StartupProgressTests(SynchronousTestCase):
    """
    The start-up scan of a storage root reports its progress.
    """

    def test_progress(self):
        """
        The scan calls its progress callable as it goes (here on every
        directory, with a zero interval) with a growing count, and the
        store logs how many repositories it found and how long it took.
        """
        root = self.mktemp()
        for i in range(5):
            directory = os.path.join(root, f"repo{i}")
            os.makedirs(os.path.join(directory, "blobs"))
            for name, data in (("oci-layout", "{}"), ("index.json", '{"manifests": []}')):
                with open(os.path.join(directory, name), "w") as f:
                    f.write(data)
        store = LocalStore(root, InlineRunner())
        reports = []
        names = store._scan(lambda count, seconds: reports.append(count), interval=0)
        self.assertEqual(sorted(names), [f"repo{i}" for i in range(5)])
        self.assertTrue(reports)
        self.assertEqual(reports, sorted(reports))
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.successResultOf(ensureDeferred(store.startService()))
        found = [e for e in events if e.get("count") == 5 and "seconds" in e]
        self.assertEqual(len(found), 1)


class OptionsTests(SynchronousTestCase):
    """
    C{twistd zot --drain-timeout}.
    """

    def parse(self, *argv):
        """
        Parse C{twistd zot} options with a valid config file.
        """
        from zotwist.tap import Options

        path = self.mktemp()
        with open(path, "w") as f:
            f.write('{"storage": {"rootDirectory": "/srv/zot"}}')
        options = Options()
        options.parseOptions(["--config", path, *argv])
        return options

    def test_default(self):
        """
        Without the option, the bound is L{DRAIN_TIMEOUT} (30 s).
        """
        from zotwist.ops.drain import DRAIN_TIMEOUT

        self.assertEqual(self.parse()["drain-timeout"], DRAIN_TIMEOUT)
        self.assertEqual(DRAIN_TIMEOUT, 30.0)

    def test_value(self):
        """
        A number of seconds is taken; a negative or non-numeric one is a
        usage error.
        """
        from twisted.python.usage import UsageError

        self.assertEqual(self.parse("--drain-timeout", "2.5")["drain-timeout"], 2.5)
        for bad in ("-1", "soon", "nan"):
            self.assertRaises(UsageError, self.parse, "--drain-timeout", bad)
