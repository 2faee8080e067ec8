"""
Tests for how L{zotwist.tap} builds the registry on an s3 config: the S3
store, GC under the leader lease, no scrub, and C{redirectBlobURL} handed
to the web layer.  Building the tree contacts neither S3 nor Redis (both
are reached only when the service starts), so no server is needed here;
L{tests.test_cluster} runs the same tree against real ones.
"""

import copy
import io
import json
import os
import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_config import S3_STORAGE
from zotwist.config import parseConfig
from zotwist.coordination.lease import LeaderLease, LeaderOnly
from zotwist.storage.gc import GarbageCollectionService
from zotwist.storage.local import LocalStore
from zotwist.storage.s3.gc import S3GarbageCollector
from zotwist.storage.s3.store import S3Store
from zotwist.storage.scrub import ScrubService
from zotwist.tap import makeServiceFromConfig


def _config(storage: dict, **sections) -> object:
    """
    A config with C{storage} and other sections, on a port nobody opens.
    """
    document = {
        "storage": storage,
        "http": {"address": "127.0.0.1", "port": "0"},
        "log": {"level": "error"},
        **sections,
    }
    return parseConfig(document)


def _services(top) -> list:
    """
    Every service in the tree, depth first.
    """
    found = []
    for service in top:
        found.append(service)
        if hasattr(service, "__iter__"):
            found.extend(_services(service))
    return found


class S3WiringTests(SynchronousTestCase):
    """
    L{makeServiceFromConfig} on an s3 C{storageDriver}.
    """

    def build(self, storage: dict | None = None, **sections):
        """
        Build the tree for the S3 example storage with changes.
        """
        merged = dict(S3_STORAGE, rootDirectory=os.path.abspath(self.mktemp()))
        merged.update(storage or {})
        return makeServiceFromConfig(_config(merged, **sections), reactor=MemoryReactorClock())

    def test_s3Store(self):
        """
        The store is an L{S3Store} on the configured bucket, and the site
        redirects blob GETs when C{redirectBlobURL} says so.
        """
        top = self.build()
        store = top.getServiceNamed("store").store
        self.assertIsInstance(store, S3Store)
        self.assertEqual(store.redis.prefix, "zotwist:{zot-storage/zot}:")
        site = top.getServiceNamed("http")._site
        self.assertTrue(site.resource.children[b"v2"]._api._redirectBlobs)
        top = self.build({"redirectBlobURL": False})
        site = top.getServiceNamed("http")._site
        self.assertFalse(site.resource.children[b"v2"]._api._redirectBlobs)

    def test_gcUnderLeaderLease(self):
        """
        GC is an S3 collector in a L{GarbageCollectionService} that runs
        only while this instance holds the store's leader lease (which is
        in the tree, so it is kept renewed); the collector checks the same
        lease itself.
        """
        top = self.build({"gcDelay": "10m", "gcInterval": "5m"})
        services = _services(top)
        leases = [s for s in services if isinstance(s, LeaderLease)]
        gated = [s for s in services if isinstance(s, LeaderOnly)]
        self.assertEqual(len(leases), 1)
        self.assertEqual(len(gated), 1)
        self.assertIs(gated[0].lease, leases[0])
        gc = gated[0].child
        self.assertIsInstance(gc, GarbageCollectionService)
        self.assertEqual(gc.interval, 300.0)
        self.assertIsInstance(gc.collector, S3GarbageCollector)
        self.assertEqual(gc.collector.delay, 600.0)
        self.assertIs(gc.collector.lease, leases[0])
        self.assertFalse(
            [s for s in services if isinstance(s, GarbageCollectionService) and s is not gc]
        )
        self.assertEqual(top.getServiceNamed("store").store.touchAfter, 300.0)

    def test_gcTimeWindowReloads(self):
        """
        C{gcTimeWindow} applies to the S3 collector's service, and a
        reload (C{SIGHUP}) changes it live, through the L{LeaderOnly}
        wrapper.
        """
        top = self.build({"gcTimeWindow": "01:00-02:00"})
        gc = next(s for s in _services(top) if isinstance(s, LeaderOnly)).child
        self.assertEqual(gc.window, (60, 120))
        settings = top.getServiceNamed("reload").settings
        document = copy.deepcopy(settings.current.raw)
        document["storage"]["gcTimeWindow"] = "03:00-04:30"
        result = settings.reload(parseConfig(document))
        self.assertIn("storage.gcTimeWindow", result.applied)
        self.assertEqual(gc.window, (180, 270))

    def test_noGC(self):
        """
        With C{gc: false} there is no collector and no lease.
        """
        services = _services(self.build({"gc": False}))
        self.assertFalse([s for s in services if isinstance(s, (LeaderLease, LeaderOnly))])
        self.assertFalse([s for s in services if isinstance(s, GarbageCollectionService)])

    def test_scrubOnS3(self):
        """
        On S3 the scrub is the S3 one, on the store, bound to the leader
        lease; without C{extensions.scrub} there is none.
        """
        from zotwist.storage.s3.scrub import S3ScrubService

        top = self.build(extensions={"scrub": {"enable": True}})
        services = _services(top)
        scrubs = [s for s in services if isinstance(s, ScrubService)]
        self.assertEqual([type(s) for s in scrubs], [S3ScrubService])
        self.assertIs(scrubs[0].store, top.getServiceNamed("store").store)
        leases = [s for s in services if isinstance(s, LeaderLease)]
        self.assertEqual(len(leases), 1)
        self.assertIs(scrubs[0].lease, leases[0])
        self.assertFalse(
            [s for s in _services(self.build()) if isinstance(s, ScrubService)]
        )

    def test_localStaysDefault(self):
        """
        Without a storage driver, and with C{"local"}, the store is the
        local one, with its plain GC service and no lease.
        """
        for storage in ({}, {"storageDriver": {"name": "local"}}):
            document = {"rootDirectory": os.path.abspath(self.mktemp()), **storage}
            top = makeServiceFromConfig(_config(document), reactor=MemoryReactorClock())
            self.assertIsInstance(top.getServiceNamed("store").store, LocalStore)
            services = _services(top)
            self.assertFalse([s for s in services if isinstance(s, (LeaderLease, LeaderOnly))])
            self.assertEqual(
                len([s for s in services if isinstance(s, GarbageCollectionService)]), 1
            )


class OfflineCommandTests(SynchronousTestCase):
    """
    C{zot gc} and C{zot scrub} on an s3 config refuse instead of walking
    the local C{rootDirectory}, which holds none of the registry's data.
    """

    def test_refused(self):
        """
        Both exit 1 naming the reason, even with C{--force}.
        """
        from zotwist import cli

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "config.json")
        with open(path, "w") as f:
            json.dump({"storage": dict(S3_STORAGE, rootDirectory=directory)}, f)
        for argv in (["gc", path], ["gc", "--force", path], ["scrub", "--force", path]):
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            self.assertEqual(cli.main(argv), 1, argv)
            self.assertIn("storage.storageDriver is s3", err.getvalue())
