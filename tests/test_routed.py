"""
Tests for L{zotwist.storage.routed} and C{storage.subPaths}: through the
HTTP API, repositories under a sub-path land in their own root, the catalog
merges the roots, a mount across roots copies, and each root's collector
honours its own C{gcDelay}.
"""

import os
import time

import treq
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests import apihelpers as api
from tests.support import startRegistry
from zotwist.storage.interfaces import IRegistryStore
from zotwist.storage.routed import RoutedStore, routeOf

HOUR = 3600.0


class _Named:
    """
    A stand-in store that only has a root and a name.
    """

    def __init__(self, root):
        self.root = root


class RoutingTests(SynchronousTestCase):
    """
    Which store a repository name routes to (zot's C{GetRoutePrefix}).
    """

    def test_firstComponentRoutes(self):
        """
        A name whose first component is a sub-path's goes there; a
        one-component name and every other name go to the default store;
        keys route case-insensitively and with or without slashes.
        """
        default, ci, tools = _Named("/d"), _Named("/c"), _Named("/t")
        routed = RoutedStore(default, {"/ci": ci, "/Tools/": tools})
        self.assertEqual(routeOf("/Tools/"), "tools")
        for name, store in [("ci/app", ci), ("ci/a/b/c", ci), ("ci", default),
                            ("cix/app", default), ("team/ci/app", default),
                            ("tools/x", tools), ("app", default)]:
            self.assertIs(routed.storeFor(name), store, name)
        self.assertEqual(routed.root, "/d")
        verifyObject(IRegistryStore, routed)


def filesUnder(root: str) -> set:
    found = set()
    for dirpath, _, files in os.walk(root):
        for name in files:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def age(path: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


class SubPathAPITests(TestCase):
    """
    A registry with the sub-path C{/ci} in a root of its own.
    """

    async def start(self):
        self.ciRoot = os.path.abspath(self.mktemp())
        reg = await startRegistry(self, {"storage": {
            "gc": True, "gcDelay": "1h", "gcInterval": "24h",
            "subPaths": {"/ci": {"rootDirectory": self.ciRoot, "dedupe": True, "gc": True,
                                 "gcDelay": "2h", "gcInterval": "24h",
                                 "gcTimeWindow": "01:00-05:00"}},
        }})
        return reg

    async def test_pushPullAndCatalog(self):
        """
        An image pushed into C{ci/app} lands under the sub-path's root (full
        name kept, as zot), one pushed into C{team/app} or C{ci} under the
        default root; all pull back whole and the catalog lists them all.
        """
        reg = await self.start()
        images = {}
        for repo in ("ci/app", "team/app", "ci"):
            images[repo] = await api.pushImage(reg, repo, "1.0", repo)
        self.assertTrue(os.path.isfile(os.path.join(self.ciRoot, "ci", "app", "index.json")))
        self.assertFalse(os.path.exists(os.path.join(reg.root, "ci", "app")))
        self.assertTrue(os.path.isfile(os.path.join(reg.root, "team", "app", "index.json")))
        self.assertTrue(os.path.isfile(os.path.join(reg.root, "ci", "index.json")))
        self.assertFalse(os.path.exists(os.path.join(self.ciRoot, "team")))
        for repo, image in images.items():
            resp = await reg.client.get(f"{reg.url}/v2/{repo}/manifests/1.0",
                                        headers={"Accept": [api.OCI_MANIFEST]})
            self.assertEqual(resp.code, 200)
            self.assertEqual(await treq.content(resp), image.manifest)
            for blob in [image.config, *image.layers]:
                resp = await reg.client.get(f"{reg.url}/v2/{repo}/blobs/{api.digestOf(blob)}")
                self.assertEqual(resp.code, 200)
                self.assertEqual(await treq.content(resp), blob)
        resp = await reg.client.get(f"{reg.url}/v2/_catalog")
        self.assertEqual((await api.jsonBody(resp))["repositories"],
                         ["ci", "ci/app", "team/app"])
        self.assertEqual(await api.tagsOf(reg, "ci/app"), ["1.0"])

    async def mount(self, reg, repo, digest, fromRepo):
        url = api.withQuery(f"{reg.url}/v2/{repo}/blobs/uploads/",
                            [("mount", digest), ("from", fromRepo)])
        resp = await reg.client.post(url, data=b"")
        await treq.content(resp)
        return resp.code

    async def test_crossRootMountCopies(self):
        """
        A mount from a repository of the default root into one of the
        sub-path's copies the blob (another inode, same bytes); a mount
        within the sub-path's root (dedupe on) is a link.
        """
        reg = await self.start()
        data = b"shared layer\n" * 1000
        digest = await api.pushBlob(reg, "team/app", data)
        self.assertEqual(await self.mount(reg, "ci/app", digest, "team/app"), 201)
        source = os.stat(os.path.join(reg.root, "team", "app", "blobs", "sha256",
                                      digest.split(":")[1]))
        copied = os.path.join(self.ciRoot, "ci", "app", "blobs", "sha256", digest.split(":")[1])
        self.assertNotEqual(os.stat(copied).st_ino, source.st_ino)
        with open(copied, "rb") as f:
            self.assertEqual(f.read(), data)
        resp = await reg.client.get(f"{reg.url}/v2/ci/app/blobs/{digest}")
        self.assertEqual(await treq.content(resp), data)
        self.assertEqual(await self.mount(reg, "ci/other", digest, "ci/app"), 201)
        linked = os.path.join(self.ciRoot, "ci", "other", "blobs", "sha256",
                              digest.split(":")[1])
        self.assertEqual(os.stat(linked).st_ino, os.stat(copied).st_ino)
        # A mount from a repository without the blob starts an upload instead.
        missing = api.digestOf(b"nowhere")
        self.assertEqual(await self.mount(reg, "ci/app", missing, "team/app"), 202)
        # Nothing of the sub-path's leaked into the default root.
        self.assertEqual({p for p in filesUnder(reg.root) if p.startswith("ci/")}, set())

    async def test_eachRootHasItsOwnCollector(self):
        """
        Each root's collector runs with that root's settings: a stray blob
        90 minutes old goes from the default root (C{gcDelay} 1h) and stays
        in the sub-path's (C{gcDelay} 2h) until it is older than that.
        """
        reg = await self.start()
        default = reg.service.getServiceNamed("gc")
        ci = reg.service.getServiceNamed("gc /ci")
        self.assertEqual((default.collector.delay, ci.collector.delay), (HOUR, 2 * HOUR))
        self.assertEqual(ci.window, (60, 300))
        self.assertIsNone(default.window)
        self.assertEqual(default.collector.store.root, reg.root)
        self.assertEqual(ci.collector.store.root, self.ciRoot)
        strays = {}
        for repo, root in (("team/app", reg.root), ("ci/app", self.ciRoot)):
            digest = await api.pushBlob(reg, repo, f"stray of {repo}".encode())
            path = os.path.join(root, *repo.split("/"), "blobs", "sha256", digest.split(":")[1])
            age(path, 1.5 * HOUR)
            strays[repo] = (digest, path)
        await default.collector.collectAll()
        await ci.collector.collectAll()
        self.assertFalse(os.path.exists(strays["team/app"][1]))
        self.assertTrue(os.path.exists(strays["ci/app"][1]))
        age(strays["ci/app"][1], 2.5 * HOUR)
        result = await ci.collector.collectAll()
        self.assertEqual(result.blobs, [strays["ci/app"][0]])
        self.assertFalse(os.path.exists(strays["ci/app"][1]))
