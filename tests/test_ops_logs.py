"""
Tests for the access log (L{zotwist.ops.access}) and the log files of
L{zotwist.logs}: what an access line holds, C{log.level}, and rotation by
rename-and-reopen or by copytruncate without losing a line.
"""

import json
import os
import shutil

from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.apihelpers import pushImage
from tests.support import startRegistry
from zotwist.config import parseConfig
from zotwist.logs import LogService, ReopenableFile


def readEvents(path: str) -> list[dict]:
    """
    The JSON events of a C{log.output} file.
    """
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def accessEvents(path: str) -> list[dict]:
    """
    The access events of a C{log.output} file.
    """
    return [e for e in readEvents(path) if e.get("log_namespace") == "zotwist.access"]


class AccessLogTests(TestCase):
    """
    One structured line per request, in the C{log.output} file.
    """

    async def test_fields(self):
        """
        Each request gives one access event at info level with the method,
        the route name, the repository, the status, the bytes in and out,
        the duration, the user (none: anonymous) and the client address.
        """
        output = os.path.abspath(self.mktemp())
        reg = await startRegistry(self, {"log": {"level": "info", "output": output}})
        image = await pushImage(reg, "team/app", "v1", "access")
        resp = await reg.client.get(f"{reg.url}/v2/team/app/blobs/{_configDigest(image)}")
        self.assertEqual(await resp.content(), image.config)
        resp = await reg.client.get(f"{reg.url}/v2/team/app/manifests/nope")
        await resp.content()
        events = accessEvents(output)
        pulls = [e for e in events if e["route"] == "blob" and e["method"] == "GET"]
        self.assertEqual(len(pulls), 1)
        pull = pulls[0]
        self.assertEqual(pull["log_level"]["name"], "info")
        self.assertEqual(pull["status"], 200)
        self.assertEqual(pull["repository"], "team/app")
        self.assertEqual(pull["bytesIn"], 0)
        self.assertEqual(pull["bytesOut"], len(image.config))
        self.assertIsNone(pull["user"])
        self.assertEqual(pull["client"], "127.0.0.1")
        self.assertGreaterEqual(pull["duration"], 0)
        self.assertLess(pull["duration"], 10)
        self.assertFalse(pull["aborted"])
        self.assertTrue(pull["path"].startswith("/v2/team/app/blobs/sha256:"))
        pushes = [e for e in events if e["route"] == "manifest" and e["method"] == "PUT"]
        self.assertEqual([(e["status"], e["bytesIn"]) for e in pushes],
                         [(201, len(image.manifest))])
        missing = [e for e in events if e["path"] == "/v2/team/app/manifests/nope"]
        self.assertEqual([e["status"] for e in missing], [404])
        uploads = [e for e in events if e["route"] == "upload" and e["method"] == "PUT"]
        self.assertEqual(sorted(e["bytesIn"] for e in uploads),
                         sorted([len(image.config)] + [len(x) for x in image.layers]))

    async def test_levelFilters(self):
        """
        Above info (C{log.level: warn}), no access line is written.
        """
        output = os.path.abspath(self.mktemp())
        reg = await startRegistry(self, {"log": {"level": "warn", "output": output}})
        await (await reg.client.get(reg.url + "/v2/")).content()
        self.assertEqual(accessEvents(output), [])

    async def test_abortedRequest(self):
        """
        A request whose client leaves before the answer is logged too,
        marked aborted with status 499.
        """
        from tests.apihelpers import rawHead, rawRequest

        output = os.path.abspath(self.mktemp())
        reg = await startRegistry(self, {"log": {"level": "info", "output": output}})
        head = rawHead(
            "PUT", "/v2/r/manifests/t",
            {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
             "Content-Length": "1000"},
        )
        await rawRequest(reg, head + b"{" * 10, closeAfterSend=True)
        from tests.procsupport import waitUntil

        await waitUntil(
            lambda: any(e.get("aborted") for e in accessEvents(output)), 5,
            "no aborted access event",
        )
        (event,) = [e for e in accessEvents(output) if e.get("aborted")]
        self.assertEqual((event["status"], event["route"], event["bytesIn"]), (499, "manifest", 10))


def _configDigest(image) -> str:
    from tests.apihelpers import digestOf

    return digestOf(image.config)


def _config(output: str, level: str = "info"):
    return parseConfig(
        {"storage": {"rootDirectory": "/unused"}, "log": {"level": level, "output": output}}
    )


#: The tests' own events (a module-level logger keeps its namespace; as a
#: class attribute, a Logger takes the class's name instead).
_log = Logger(namespace="zotwist.test")


class LogServiceTests(SynchronousTestCase):
    """
    L{LogService}: level changes and rotation of C{log.output}.
    """

    def startLogs(self, output: str, level: str = "info") -> LogService:
        """
        Start a L{LogService} for C{output}; stop it at the end.
        """
        service = LogService(_config(output, level))
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def messages(self, path: str) -> list[str]:
        """
        The C{text} of the test's own events in C{path}.
        """
        return [e["text"] for e in readEvents(path) if e.get("log_namespace") == "zotwist.test"]

    def test_setLevel(self):
        """
        A new level applies to the next event.
        """
        output = self.mktemp()
        service = self.startLogs(output, "warn")
        _log.info("{text}", text="hidden")
        service.setLevel("debug")
        _log.debug("{text}", text="shown")
        service.setLevel("ERROR")
        _log.warn("{text}", text="hidden too")
        self.assertEqual(self.messages(output), ["shown"])

    def test_passesInfo(self):
        """
        L{LogService.passesInfo} follows the level, so the access log can
        skip building events the level would drop.
        """
        output = self.mktemp()
        service = self.startLogs(output, "warn")
        self.assertFalse(service.passesInfo())
        service.setLevel("info")
        self.assertTrue(service.passesInfo())
        service.setLevel("debug")
        self.assertTrue(service.passesInfo())
        service.setLevel("error")
        self.assertFalse(service.passesInfo())

    def test_applyConfigMovesOutput(self):
        """
        A reloaded config with another C{log.output} writes there from the
        next event on, and leaves the old file complete.
        """
        first, second = self.mktemp(), self.mktemp()
        service = self.startLogs(first)
        _log.info("{text}", text="one")
        service.applyConfig(_config(second))
        _log.info("{text}", text="two")
        self.assertEqual(self.messages(first), ["one"])
        self.assertEqual(self.messages(second), ["two"])

    def test_renameAndReopen(self):
        """
        After the file is renamed, events still go to it until L{reopen};
        then to a new file of the old name: none is lost, none doubled.
        """
        output = self.mktemp()
        service = self.startLogs(output)
        _log.info("{text}", text="before")
        os.rename(output, output + ".1")
        _log.info("{text}", text="between")
        service.reopen()
        _log.info("{text}", text="after")
        self.assertEqual(self.messages(output + ".1"), ["before", "between"])
        self.assertEqual(self.messages(output), ["after"])

    def test_copyTruncate(self):
        """
        logrotate's copytruncate (copy, then truncate in place) leaves a
        file that continues at its start, with no hole of zero bytes.
        """
        output = self.mktemp()
        self.startLogs(output)
        _log.info("{text}", text="a" * 500)
        shutil.copyfile(output, output + ".1")
        with open(output, "r+b") as f:
            f.truncate(0)
        _log.info("{text}", text="b")
        with open(output, "rb") as f:
            data = f.read()
        self.assertNotIn(b"\0", data)
        self.assertEqual(self.messages(output), ["b"])
        self.assertEqual(self.messages(output + ".1"), ["a" * 500])

    def test_reopenHooks(self):
        """
        L{LogService.reopen} calls the registered hooks (for the audit
        log); a failing hook is logged and does not stop the others.
        """
        service = self.startLogs(self.mktemp())
        calls = []

        def broken():
            raise OSError("nope")

        service.addReopenHook(broken)
        service.addReopenHook(lambda: calls.append("audit"))
        service.reopen()
        self.assertEqual(calls, ["audit"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_stopRestoresObservers(self):
        """
        Stopping the service removes its file observer and unwraps the
        observers it filtered.
        """
        before = list(globalLogPublisher._observers)
        service = LogService(_config(self.mktemp()))
        service.startService()
        service.stopService()
        self.assertEqual(list(globalLogPublisher._observers), before)


class ReopenableFileTests(SynchronousTestCase):
    """
    L{ReopenableFile} on its own.
    """

    def test_textAndBytes(self):
        """
        Text is written as UTF-8, bytes as they are, at the end of the file.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"old\n")
        logFile = ReopenableFile(path)
        logFile.write("é\n")
        logFile.write(b"x\n")
        logFile.close()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), "old\né\nx\n".encode())

    def test_reopenFailureKeepsOldFile(self):
        """
        A new file that cannot be opened raises and the old one stays in
        use.
        """
        path = self.mktemp()
        logFile = ReopenableFile(path)
        self.addCleanup(logFile.close)
        self.assertRaises(OSError, logFile.reopen, os.path.join(path + ".missing", "x"))
        logFile.write(b"still here\n")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"still here\n")
