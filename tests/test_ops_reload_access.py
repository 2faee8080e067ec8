"""
C{SIGHUP} changes who may log in and what they may do, without a restart:
htpasswd entries and C{http.accessControl}, through the real server.
"""

import json
import os
import signal

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.apihelpers import digestOf
from tests.authsupport import basic, writeHTPasswd
from tests.procsupport import RegistryProcess


def _policy(actions):
    return {
        "repositories": {"**": {"policies": [{"users": ["alice"], "actions": actions}]}}
    }


class ReloadAccessTests(TestCase):
    """
    A running registry picks up changed logins and policies on SIGHUP.
    """

    timeout = 60

    async def setUp(self):
        self.htpasswd = os.path.abspath(self.mktemp())
        writeHTPasswd(self.htpasswd, {"alice": "old-pw"})
        self.server = RegistryProcess(
            self,
            {
                "log": {"level": "info"},
                "http": {
                    "auth": {"htpasswd": {"path": self.htpasswd}},
                    "accessControl": _policy(["read"]),
                },
            },
        )
        await self.server.start()
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.treq = HTTPClient(Agent(reactor, pool=pool))

    async def post(self, password):
        data = b"reload me"
        resp = await self.treq.post(
            f"{self.server.url}/v2/team/app/blobs/uploads/?digest={digestOf(data)}",
            data=data,
            headers={"Authorization": [basic("alice", password)]},
        )
        await resp.content()
        return resp.code

    async def waitFor(self, password, code):
        for _ in range(100):
            if await self.post(password) == code:
                return
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"never got {code}")

    def rewrite(self, **http):
        with open(self.server.configPath) as f:
            document = json.load(f)
        document["http"].update(http)
        with open(self.server.configPath, "w") as f:
            json.dump(document, f)

    async def test_accessControlReloaded(self):
        """
        alice may only read: her push is 403; after the config grants her
        create and the registry gets SIGHUP, the same push is 201, in the
        same process.
        """
        pid = self.server.pid
        self.assertEqual(await self.post("old-pw"), 403)
        self.rewrite(accessControl=_policy(["read", "create"]))
        self.server.signal(signal.SIGHUP)
        await self.waitFor("old-pw", 201)
        self.assertEqual(self.server.pid, pid)

    async def test_removingAccessControlRefused(self):
        """
        Removing C{accessControl} cannot be applied live: the reload is
        refused and the old policy stays (alice still cannot push).
        """
        self.rewrite(accessControl=None)
        self.server.signal(signal.SIGHUP)
        await deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(await self.post("old-pw"), 403)
        self.assertIn("cannot be removed without a restart", self.server.log())

    async def test_htpasswdReloaded(self):
        """
        A new password for alice works after the file changes and SIGHUP
        (the old one stops working), with no restart.
        """
        self.rewrite(accessControl=_policy(["read", "create"]))
        self.server.signal(signal.SIGHUP)
        await self.waitFor("old-pw", 201)
        writeHTPasswd(self.htpasswd, {"alice": "new-pw"})
        self.server.signal(signal.SIGHUP)
        await self.waitFor("new-pw", 201)
        self.assertEqual(await self.post("old-pw"), 401)
