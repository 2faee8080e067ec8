"""
Tests for L{zotwist.web.audit}: one JSON line per change, over real HTTP.

Callers are told apart by the TEST-ONLY L{HeaderAuthenticator}.
"""

import json
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.accesshelpers import HeaderAuthenticator, loadPolicy, startSite
from tests.apihelpers import digestOf, pushImage, status
from zotwist.auth.authorizer import RegistryAuthorizer
from zotwist.web.audit import AuditLog, _result

#: 2030-01-01T00:00:00Z
WHEN = 1893456000.0

ALL = ["read", "create", "update", "delete"]

#: lucy may do everything, root is admin, everyone else reads.
ACCESS_CONTROL = {
    "repositories": {
        "**": {
            "policies": [{"users": ["lucy"], "actions": ALL}],
            "defaultPolicy": ["read"],
            "anonymousPolicy": ["read"],
        }
    },
    "adminPolicy": {"users": ["root"], "actions": ALL},
}


class AuditHTTPTests(TestCase):
    """
    What the audit log holds after real requests.
    """

    async def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        clock = Clock()
        clock.advance(WHEN)
        self.audit = AuditLog(self.path, clock)
        self.audit.startService()
        self.addCleanup(self.audit.stopService)
        policy = loadPolicy(ACCESS_CONTROL)
        self.site = await startSite(
            self,
            HeaderAuthenticator(),
            lambda store: RegistryAuthorizer(policy, store),
            audit=self.audit,
        )

    def records(self) -> list:
        """
        The records written so far (read while the log is open: every line
        must already be in the file).
        """
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    async def test_changesRecorded(self):
        """
        A push records each change with who, from where, what, the
        repository, the reference, the status and the result; reads record
        nothing.
        """
        lucy = self.site.as_("lucy")
        image = await pushImage(lucy, "team/app", "v1", "audited")
        for path in ["/v2/", "/v2/team/app/manifests/v1", "/v2/team/app/tags/list",
                     "/v2/_catalog"]:
            await status(lucy, "GET", self.site.url + path)
        records = self.records()
        self.assertEqual(
            [(r["method"], r["status"]) for r in records],
            [("POST", 202), ("PUT", 201), ("POST", 202), ("PUT", 201), ("PUT", 201)],
        )
        for record in records:
            self.assertEqual(record["time"], "2030-01-01T00:00:00.000Z")
            self.assertEqual(record["user"], "lucy")
            self.assertEqual(record["auth"], "test")
            self.assertEqual(record["clientIP"], "127.0.0.1")
            self.assertEqual(record["repository"], "team/app")
            self.assertEqual(record["result"], "success")
        self.assertEqual(records[1]["reference"], digestOf(image.config))
        self.assertIn("upload", records[1])
        self.assertEqual(records[-1]["reference"], "v1")
        self.assertEqual(records[-1]["path"], "/v2/team/app/manifests/v1")

    async def test_refusalsRecorded(self):
        """
        Refused changes are recorded as denied, anonymous ones without a
        user; failures as failures.
        """
        await pushImage(self.site.as_("root"), "team/app", "v1", "target")
        url = f"{self.site.url}/v2/team/app"
        await status(self.site.as_(None), "POST", f"{url}/blobs/uploads/", data=b"")
        await status(self.site.as_("dave"), "DELETE", f"{url}/manifests/v1")
        await status(self.site.as_("root"), "DELETE", f"{url}/manifests/nope")
        await status(self.site.as_("root"), "DELETE", f"{url}/manifests/v1")
        records = self.records()[-4:]
        self.assertEqual(
            [(r["user"], r["auth"], r["method"], r["status"], r["result"], r["reference"])
             for r in records],
            [
                (None, "anonymous", "POST", 401, "denied", None),
                ("dave", "test", "DELETE", 403, "denied", "v1"),
                ("root", "test", "DELETE", 404, "failure", "nope"),
                ("root", "test", "DELETE", 202, "success", "v1"),
            ],
        )

    async def test_mountReference(self):
        """
        A mount records the digest it asked for.
        """
        image = await pushImage(self.site.as_("root"), "misc/a", "v1", "mounted")
        digest = digestOf(image.layers[0])
        await status(
            self.site.as_("lucy"), "POST",
            f"{self.site.url}/v2/misc/b/blobs/uploads/?mount={digest}&from=misc/a", data=b"",
        )
        record = self.records()[-1]
        self.assertEqual((record["reference"], record["status"]), (digest, 201))

    async def test_noCredentials(self):
        """
        Credentials sent by the client never reach the audit log.
        """
        await status(
            self.site.as_("lucy"), "POST", f"{self.site.url}/v2/misc/a/blobs/uploads/",
            data=b"", headers={"Authorization": ["Basic bHVjeTpzM2NyZXQ="]},
        )
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        self.assertIn('"user":"lucy"', text)
        self.assertNotIn("bHVjeTpzM2NyZXQ", text)


class AuditUnitTests(SynchronousTestCase):
    """
    The audit log's pieces.
    """

    def test_results(self):
        """
        Statuses map to results; a client that left is "aborted".
        """
        self.assertEqual(
            [_result(code, False) for code in (200, 201, 202, 204, 401, 403, 429, 400, 500)],
            ["success"] * 4 + ["denied"] * 3 + ["failure"] * 2,
        )
        self.assertEqual(_result(202, True), "aborted")

    def test_appends(self):
        """
        The log appends to an existing file, and closes it when stopped.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('{"earlier":true}\n')
        audit = AuditLog(path, Clock())
        audit.startService()
        audit.write({"a": 1})
        audit.stopService()
        audit.write({"dropped": True})
        with open(path) as f:
            self.assertEqual(f.read(), '{"earlier":true}\n{"a":1}\n')
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_reopenAfterRotation(self):
        """
        After the file is renamed (log rotation) and the log reopened, new
        records go to a new file under the configured name and the earlier
        ones stay in the renamed file: none lost, none duplicated.
        """
        path = self.mktemp()
        audit = AuditLog(path, Clock())
        audit.startService()
        audit.write({"n": 1})
        os.rename(path, path + ".1")
        audit.write({"n": 2})
        audit.reopen()
        audit.write({"n": 3})
        audit.stopService()
        with open(path + ".1") as f:
            self.assertEqual(f.read(), '{"n":1}\n{"n":2}\n')
        with open(path) as f:
            self.assertEqual(f.read(), '{"n":3}\n')
