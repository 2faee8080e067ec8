"""
Tests for L{zotwist.storage.dedupe}: identical blobs of different
repositories stored once, as hard links (C{storage.dedupe}).

L{StoreDedupeTests} and L{ConversionTests} drive a L{LocalStore} with an
inline runner (every operation completes synchronously);
L{HTTPDedupeTests} pushes through a registry served on loopback.
"""

import hashlib
import os
import shutil

import treq
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.apihelpers import (
    blobFiles,
    body,
    digestOf,
    makeImage,
    pushBlob,
    pushImage,
    storeProblems,
)
from tests.support import startRegistry
from tests.test_local import StoreCase
from zotwist import oci
from zotwist.storage import dedupe as dedupeModule
from zotwist.storage.dedupe import COPIES, DIRECTORY, LINKED, hardLinksWork
from zotwist.storage.local import LocalStore
from zotwist.threads import InlineRunner

LAYERS = (b"a layer shared by many repositories\n" * 300, b"a second layer\n" * 200)
CONFIG = b'{"architecture": "amd64", "os": "linux"}'


def inodeOf(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def uniqueBytes(paths) -> int:
    """
    The bytes the files at C{paths} take, counting each inode once.
    """
    seen = {}
    for path in paths:
        st = os.stat(path)
        seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


class DedupeStoreCase(StoreCase):
    """
    A store with dedupe on (L{dedupe}), stopped at the end of the test.
    """

    dedupe = True

    def makeStore(self, dedupe=None, linkCheck=None) -> LocalStore:
        store = LocalStore(
            self.root, InlineRunner(), dedupe=self.dedupe if dedupe is None else dedupe
        )
        if linkCheck is not None:
            store._dedupe._linkCheck = linkCheck
        self.result(store.startService())
        self.addCleanup(lambda: self.result(store.stopService()))
        return store

    def restart(self, **kwargs) -> LocalStore:
        """
        Stop the current store and start another on the same root.
        """
        self.result(self.store.stopService())
        self.store = self.makeStore(**kwargs)
        return self.store

    def blobPath(self, name: str, digest: str) -> str:
        return self.store._blobPath(name, digest)

    def logged(self):
        """
        Capture log events from now on (read them with L{texts}).
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        return observer

    @staticmethod
    def texts(observer) -> str:
        from twisted.logger import formatEvent

        return "\n".join(formatEvent(e) for e in observer)


class StoreDedupeTests(DedupeStoreCase):
    """
    Publishing and mounting with dedupe on and off.
    """

    def test_pushLinksAcrossRepositories(self):
        """
        An image pushed into 20 repositories is stored once: each of its
        blobs (the manifest too) is one inode with 20 links, and the files
        take the bytes of a single copy.
        """
        names = [f"team{i}/app" for i in range(20)]
        for name in names:
            body_, manifestDigest = self.pushImage(name, "v1", layers=LAYERS, config=CONFIG)
        digests = [oci.digestOf(b) for b in (CONFIG, *LAYERS)] + [manifestDigest]
        for digest in digests:
            paths = [self.blobPath(name, digest) for name in names]
            self.assertEqual(len({inodeOf(p) for p in paths}), 1, digest)
            self.assertEqual(os.stat(paths[0]).st_nlink, 20)
        everything = [self.blobPath(n, d) for n in names for d in digests]
        oneCopy = sum(len(b) for b in (CONFIG, *LAYERS, body_))
        self.assertEqual(uniqueBytes(everything), oneCopy)
        self.assertEqual(storeProblems(self.root), [])

    def test_dedupeOffCopies(self):
        """
        With dedupe off no link is made: each repository's blob is a file of
        its own, and a mount copies.
        """
        store = self.restart(dedupe=False)
        digest = self.pushBlob("a", LAYERS[0])
        self.pushBlob("b", LAYERS[0])
        self.assertEqual(self.result(store.mountBlob("c", digest, "a")), len(LAYERS[0]))
        self.assertEqual(self.result(store.mountBlob("d", digest, None)), len(LAYERS[0]))
        paths = [self.blobPath(n, digest) for n in "abcd"]
        self.assertEqual(len({inodeOf(p) for p in paths}), 4)
        self.assertEqual({os.stat(p).st_nlink for p in paths}, {1})
        self.assertEqual(storeProblems(self.root), [])

    def test_mountFromLinks(self):
        """
        A mount with C{from} is a hard link to the source's file.
        """
        digest = self.pushBlob("a", LAYERS[0])
        self.assertEqual(self.result(self.store.mountBlob("b", digest, "a")), len(LAYERS[0]))
        self.assertEqual(inodeOf(self.blobPath("a", digest)), inodeOf(self.blobPath("b", digest)))
        self.assertEqual(self.store._dedupe.index.holders(digest), ["a", "b"])

    def test_mountWithoutFromUsesIndex(self):
        """
        A mount without C{from} finds the holder through the index, without
        going through the repositories: it succeeds even when the store's
        list of repositories is empty, and makes a link.
        """
        digest = self.pushBlob("a", LAYERS[0])
        self.store._repositories.clear()
        self.store._repositorySet.clear()
        self.assertEqual(self.result(self.store.mountBlob("b", digest, None)), len(LAYERS[0]))
        self.assertEqual(inodeOf(self.blobPath("a", digest)), inodeOf(self.blobPath("b", digest)))

    def test_mountWithoutFromOnlyFromReadable(self):
        """
        The holders the index names are still filtered by C{mayRead}.
        """
        digest = self.pushBlob("secret", LAYERS[0])
        self.assertIsNone(
            self.result(self.store.mountBlob("b", digest, None, mayRead=lambda n: False))
        )
        self.assertFalse(os.path.exists(self.blobPath("b", digest)))

    def test_staleEntryIgnored(self):
        """
        Index entries whose file is gone, or holds content of another size,
        are not linked to, and are dropped from the index.
        """
        digest = self.pushBlob("good", LAYERS[0])
        index = self.store._dedupe.index
        index.add(digest, "ghost")
        wrong = self.blobPath("aawrong", digest)
        os.makedirs(os.path.dirname(wrong))
        with open(wrong, "wb") as f:
            f.write(b"something else")
        index.add(digest, "aawrong")
        self.pushBlob("new", LAYERS[0])
        self.assertEqual(
            inodeOf(self.blobPath("new", digest)), inodeOf(self.blobPath("good", digest))
        )
        self.assertEqual(index.holders(digest), ["good", "new"])

    def test_holderDeletedMeanwhile(self):
        """
        When the only holder's file was removed behind the index's back, the
        next push stores a fresh copy and becomes the holder.
        """
        digest = self.pushBlob("a", LAYERS[0])
        os.unlink(self.blobPath("a", digest))
        self.pushBlob("b", LAYERS[0])
        self.assertEqual(os.stat(self.blobPath("b", digest)).st_nlink, 1)
        self.assertEqual(self.store._dedupe.index.holders(digest), ["b"])

    def test_deleteForgets(self):
        """
        Deleting a blob through the store removes its index entry.
        """
        digest = self.pushBlob("a", LAYERS[0])
        self.pushBlob("b", LAYERS[0])
        self.result(self.store.deleteBlob("a", digest))
        self.assertEqual(self.store._dedupe.index.holders(digest), ["b"])
        self.assertEqual(os.stat(self.blobPath("b", digest)).st_nlink, 1)

    def test_rePushKeepsUpload(self):
        """
        A push of a blob the repository already holds (a client repairing a
        damaged file, say) publishes the fresh upload, not a link to another
        repository's copy.
        """
        digest = self.pushBlob("a", LAYERS[0])
        self.pushBlob("b", LAYERS[0])
        self.pushBlob("b", LAYERS[0])
        self.assertNotEqual(
            inodeOf(self.blobPath("a", digest)), inodeOf(self.blobPath("b", digest))
        )
        self.assertEqual(storeProblems(self.root), [])

    def test_chunkedUploadLinks(self):
        """
        A blob completed through an upload session is linked as well, and
        the session leaves nothing behind.
        """
        digest = self.pushBlob("a", LAYERS[0])
        uploadID = self.startSession("b")
        self.patch("b", uploadID, LAYERS[0])
        self.result(self.store.completeUpload("b", uploadID, digest, None))
        self.assertEqual(inodeOf(self.blobPath("a", digest)), inodeOf(self.blobPath("b", digest)))
        self.assertEqual(os.listdir(self.repoPath("b", ".uploads")), [])

    def test_hardLinkCheck(self):
        """
        L{hardLinksWork} is true on an ordinary filesystem and false when
        C{link} fails, leaving no file behind either way.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        self.assertTrue(hardLinksWork(directory))

        def refuse(source, target):
            raise PermissionError(1, "Operation not permitted")

        self.assertFalse(hardLinksWork(directory, link=refuse))
        self.assertEqual(os.listdir(directory), [])

    def test_noHardLinksCopies(self):
        """
        When the filesystem does not allow hard links, the store says so in
        the log and stores copies, with dedupe on.
        """
        observer = self.logged()
        store = self.restart(linkCheck=lambda directory: False)
        self.assertIn("does not allow hard links", self.texts(observer))
        self.assertFalse(store._dedupe.linking)
        digest = self.pushBlob("a", LAYERS[0])
        self.pushBlob("b", LAYERS[0])
        self.result(store.mountBlob("c", digest, "a"))
        paths = [self.blobPath(n, digest) for n in "abc"]
        self.assertEqual(len({inodeOf(p) for p in paths}), 3)


class ConversionTests(DedupeStoreCase):
    """
    The index rebuilt from the layouts, and the root converted when the
    setting changes.
    """

    names = [f"repo{i}" for i in range(5)]

    def fill(self):
        """
        Push the same image into every repository of L{names}; return the
        digests of its blobs.
        """
        for name in self.names:
            _, manifestDigest = self.pushImage(name, "v1", layers=LAYERS, config=CONFIG)
        return [oci.digestOf(b) for b in (CONFIG, *LAYERS)] + [manifestDigest]

    def patchBatch(self, size: int) -> None:
        """
        Make conversions work C{size} files per step, for this test.
        """
        saved = dedupeModule._BATCH
        dedupeModule._BATCH = size
        self.addCleanup(setattr, dedupeModule, "_BATCH", saved)

    def inodes(self, digest: str) -> set:
        return {inodeOf(self.blobPath(n, digest)) for n in self.names}

    def test_rebuildWhenMissing(self):
        """
        A deleted index is rebuilt from the layouts at the next start, and
        dedupe goes on from it.
        """
        digests = self.fill()
        self.result(self.store.stopService())
        shutil.rmtree(os.path.join(self.root, DIRECTORY))
        observer = self.logged()
        store = self.makeStore()
        self.assertIn("blob index rebuilt: 20 blobs in 5 repositories", self.texts(observer))
        self.assertTrue(store._dedupe.ready)
        self.assertEqual(store._dedupe.index.holders(digests[1]), self.names)
        self.pushBlob("late", LAYERS[0], store=store)
        self.assertEqual(os.stat(self.blobPath("late", digests[1])).st_nlink, 6)

    def test_rebuildWhenUnreadable(self):
        """
        An index file that is not a database is started over and rebuilt.
        """
        digests = self.fill()
        self.result(self.store.stopService())
        with open(os.path.join(self.root, DIRECTORY, "index.db"), "wb") as f:
            f.write(b"not sqlite at all" * 100)
        store = self.makeStore()
        self.assertEqual(store._dedupe.index.holders(digests[0]), self.names)

    def test_restartSameModeDoesNothing(self):
        """
        A start with the setting unchanged and the index complete neither
        rebuilds nor converts.
        """
        self.fill()
        observer = self.logged()
        self.restart()
        text = self.texts(observer)
        self.assertNotIn("rebuilding", text)
        self.assertNotIn("linking", text)

    def hashesMatch(self, digests):
        for name in self.names:
            for digest in digests:
                with open(self.blobPath(name, digest), "rb") as f:
                    self.assertEqual(oci.digestOf(f.read()), digest)

    def test_onToOff(self):
        """
        Turning dedupe off gives every repository a copy of its own: no blob
        file keeps more than one link, every one still hashes to its name,
        progress is logged, and the mode is recorded.
        """
        digests = self.fill()
        self.assertEqual(len(self.inodes(digests[1])), 1)
        observer = self.logged()
        store = self.restart(dedupe=False)
        self.assertIn("copying hard-linked blobs: done", self.texts(observer))
        for digest in digests:
            self.assertEqual(len(self.inodes(digest)), len(self.names))
        self.assertEqual({os.stat(p).st_nlink for p in blobFiles(self.root)}, {1})
        self.hashesMatch(digests)
        self.assertEqual(storeProblems(self.root), [])
        self.assertEqual(store._dedupe.index.getMeta("mode"), COPIES)

    def test_offToOn(self):
        """
        Turning dedupe on links identical blobs: each is one inode with a
        link per repository, every file still hashes to its name.
        """
        self.store = self.restart(dedupe=False)
        digests = self.fill()
        self.assertEqual(len(self.inodes(digests[1])), len(self.names))
        observer = self.logged()
        store = self.restart(dedupe=True)
        self.assertIn("linking identical blobs: done", self.texts(observer))
        for digest in digests:
            self.assertEqual(len(self.inodes(digest)), 1)
            self.assertEqual(os.stat(self.blobPath(self.names[0], digest)).st_nlink, 5)
        self.hashesMatch(digests)
        self.assertEqual(storeProblems(self.root), [])
        self.assertEqual(store._dedupe.index.getMeta("mode"), LINKED)

    def test_offToOnSkipsDamagedCopy(self):
        """
        When linking, a copy that does not hash to its name is never the
        one linked to; it is replaced by a link to a good copy.
        """
        self.store = self.restart(dedupe=False)
        digests = self.fill()
        damaged = self.blobPath(self.names[0], digests[1])
        with open(damaged, "r+b") as f:
            f.write(b"X")
        self.restart(dedupe=True)
        self.assertEqual(len(self.inodes(digests[1])), 1)
        self.hashesMatch(digests)
        self.assertEqual(storeProblems(self.root), [])

    def test_interruptedConversionResumes(self):
        """
        A conversion stopped before its end records no mode, so the next
        start runs it again and finishes.
        """
        digests = self.fill()
        self.result(self.store.stopService())
        self.patchBatch(1)
        store = LocalStore(self.root, InlineRunner(), dedupe=False)
        step = store._dedupe._unlinkBatch

        def stepThenStop(batch):
            store._dedupe._stopping = True
            return step(batch)

        store._dedupe._unlinkBatch = stepThenStop
        observer = self.logged()
        self.result(store.startService())
        self.result(store.stopService())
        self.assertIn("stopped; resumes at the next start", self.texts(observer))
        self.assertIsNone(store._dedupe.index.getMeta("mode"))
        # One file of one blob was copied, the rest are still links.
        first = min(digests)
        self.assertEqual(len(self.inodes(first)), 2)
        for digest in digests:
            if digest != first:
                self.assertEqual(len(self.inodes(digest)), 1)
        store = self.makeStore(dedupe=False)
        self.assertEqual(len(self.inodes(digests[1])), len(self.names))
        self.assertEqual(store._dedupe.index.getMeta("mode"), COPIES)


class HTTPDedupeTests(TestCase):
    """
    Dedupe through the registry's HTTP API.
    """

    async def pushTwenty(self, dedupe: bool):
        """
        Push one image into 20 repositories of a registry with C{dedupe};
        return the registry, the image and the blob files' paths.
        """
        reg = await startRegistry(self, {"storage": {"dedupe": dedupe}})
        names = [f"fleet/app{i}" for i in range(20)]
        for name in names:
            image = await pushImage(reg, name, "latest", "shared")
        return reg, image, names

    async def test_twentyRepositoriesGrowOnce(self):
        """
        The same image pushed into 20 repositories takes the disk space of
        one copy with dedupe on (each blob one inode with 20 links), and 20
        copies with it off; every repository still serves the blob.
        """
        reg, image, names = await self.pushTwenty(True)
        blobs = (image.config, *image.layers, image.manifest)
        oneCopy = sum(len(b) for b in blobs)
        files = blobFiles(reg.root)
        self.assertEqual(len(files), 20 * len(blobs))
        self.assertEqual(uniqueBytes(files), oneCopy)
        for data in blobs:
            hexPart = hashlib.sha256(data).hexdigest()
            paths = [os.path.join(reg.root, n, "blobs", "sha256", hexPart) for n in names]
            self.assertEqual(len({inodeOf(p) for p in paths}), 1)
            self.assertEqual(os.stat(paths[0]).st_nlink, 20)
        resp = await reg.client.get(
            f"{reg.url}/v2/{names[-1]}/blobs/{digestOf(image.layers[0])}"
        )
        self.assertEqual(await body(resp), image.layers[0])

        reg, image, names = await self.pushTwenty(False)
        files = blobFiles(reg.root)
        self.assertEqual(uniqueBytes(files), 20 * oneCopy)

    async def test_concurrentPushesOneCopy(self):
        """
        Ten clients pushing the same blob into ten repositories at once end
        with one file linked ten times: publishing a digest is serialized.
        """
        reg = await startRegistry(self)
        data = os.urandom(256 * 1024)
        names = [f"race/r{i}" for i in range(10)]
        await gatherResults([ensureDeferred(pushBlob(reg, name, data)) for name in names])
        hexPart = hashlib.sha256(data).hexdigest()
        paths = [os.path.join(reg.root, n, "blobs", "sha256", hexPart) for n in names]
        self.assertEqual(len({inodeOf(p) for p in paths}), 1)
        self.assertEqual(os.stat(paths[0]).st_nlink, 10)
        self.assertEqual(storeProblems(reg.root), [])

    async def test_crossRepositoryMount(self):
        """
        C{POST ?mount=} with and without C{from} answers 201 and makes a
        hard link to the existing blob.
        """
        reg = await startRegistry(self)
        data = makeImage("mounted").layers[0]
        digest = await pushBlob(reg, "source/repo", data)
        for query, target in [("&from=source/repo", "with/from"), ("", "without/from")]:
            resp = await reg.client.post(
                f"{reg.url}/v2/{target}/blobs/uploads/?mount={digest}{query}", data=b""
            )
            await treq.content(resp)
            self.assertEqual(resp.code, 201, target)
        hexPart = digest.split(":")[1]
        paths = [
            os.path.join(reg.root, n, "blobs", "sha256", hexPart)
            for n in ("source/repo", "with/from", "without/from")
        ]
        self.assertEqual(len({inodeOf(p) for p in paths}), 1)
        self.assertEqual(os.stat(paths[0]).st_nlink, 3)
