"""
Tests for L{zotwist.coordination.client}, against a real redis-server.
"""

import threading
import uuid

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clustersupport import redisServer
from zotwist.coordination.client import RedisClient, storePrefix
from zotwist.threads import ThreadPoolRunner


class KeyTests(SynchronousTestCase):
    """
    Key names are built in one place, under the store's prefix.
    """

    def test_storePrefix(self):
        """
        The prefix names the bucket and root directory inside a hash tag.
        """
        self.assertEqual(storePrefix("b", "/zot"), "zotwist:{b/zot}:")
        self.assertEqual(storePrefix("b", "zot/"), "zotwist:{b/zot}:")
        self.assertEqual(storePrefix("b", "/"), "zotwist:{b/}:")

    def test_key(self):
        """
        Parts are joined with colons after the prefix; a digest's own colon
        stays.
        """
        client = RedisClient("redis://127.0.0.1:1/0", None, "p:")
        self.assertEqual(client.key("repos"), "p:repos")
        self.assertEqual(client.key("blobs", "a/b"), "p:blobs:a/b")
        self.assertEqual(client.key("holders", "sha256:00"), "p:holders:sha256:00")
        self.assertRaises(ValueError, client.key)


class RunTests(TestCase):
    """
    L{RedisClient.run} runs redis-py in a pool thread.
    """

    def setUp(self):
        self.server = redisServer()
        self.runner = ThreadPoolRunner(reactor, name="redis-test")
        self.runner.startService()
        self.addCleanup(self.runner.stopService)
        self.client = RedisClient(self.server.url, self.runner, f"t:{uuid.uuid4().hex}:")
        self.addCleanup(self.client.close)

    async def test_offTheReactor(self):
        """
        The function gets the C{redis.Redis}, runs outside the main thread,
        and its result comes back.
        """
        key = self.client.key("x")

        def work(r, value):
            r.set(key, value)
            return r.get(key), threading.current_thread() is threading.main_thread()

        value, onMain = await self.client.run(work, b"hello")
        self.assertEqual(value, b"hello")
        self.assertFalse(onMain)

    async def test_survivesRestart(self):
        """
        After Redis restarts (empty), the next command reconnects instead of
        failing.
        """
        key = self.client.key("y")
        await self.client.run(lambda r: r.set(key, b"1"))
        self.server.restart()
        self.assertIsNone(await self.client.run(lambda r: r.get(key)))
        await self.client.run(lambda r: r.set(key, b"2"))
        self.assertEqual(await self.client.run(lambda r: r.get(key)), b"2")
