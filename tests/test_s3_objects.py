"""
Tests for L{zotwist.storage.s3.objects}, against the real Ceph RGW of
L{tests.clustersupport}.
"""

import hashlib
import os
import threading

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.clustersupport import cephS3, newBucket
from zotwist.storage.s3.objects import (
    ObjectStore,
    PreconditionFailed,
    driverFlag,
    endpointURL,
)
from zotwist.threads import ThreadPoolRunner

MiB = 1024 * 1024


def objectStore(testCase, bucket=None) -> ObjectStore:
    """
    An L{ObjectStore} on a fresh bucket of the test cluster, with its own
    thread pool stopped when the test ends.
    """
    endpoint = cephS3()
    runner = ThreadPoolRunner(reactor, name="s3-test")
    runner.startService()
    testCase.addCleanup(runner.stopService)
    return ObjectStore.fromDriverConfig(
        {
            "name": "s3",
            "regionendpoint": endpoint.url,
            "bucket": bucket or newBucket(endpoint),
            "region": endpoint.region,
            "accessKey": endpoint.accessKey,
            "secretkey": endpoint.secretKey,
            "secure": False,
            "forcepathstyle": True,
        },
        runner,
    )


class EndpointTests(SynchronousTestCase):
    """
    zot's C{regionendpoint} may or may not carry a scheme.
    """

    def test_endpointURL(self):
        self.assertEqual(endpointURL("http://h:1/", True), "http://h:1")
        self.assertEqual(endpointURL("h:1", True), "https://h:1")
        self.assertEqual(endpointURL("h:1", False), "http://h:1")
        self.assertIsNone(endpointURL(None, True))
        self.assertIsNone(endpointURL("", False))


class ObjectStoreTests(TestCase):
    """
    Each call against RGW, in the thread pool.
    """

    def setUp(self):
        self.objects = objectStore(self)
        self.s3 = cephS3().client()
        self.bucket = self.objects.bucket

    async def test_putGetHeadDelete(self):
        """
        A put object is read back with its size and unquoted ETag; after a
        delete it is gone, and a missing key is L{None}, not an error.
        """
        etag = await self.objects.put("r/a", b"hello")
        self.assertEqual(etag, hashlib.md5(b"hello").hexdigest())
        self.assertEqual(await self.objects.head("r/a"), 5)
        self.assertEqual(await self.objects.get("r/a"), b"hello")
        self.assertEqual(await self.objects.getWithETag("r/a"), (b"hello", etag))
        await self.objects.delete("r/a")
        self.assertIsNone(await self.objects.head("r/a"))
        self.assertIsNone(await self.objects.get("r/a"))
        self.assertIsNone(await self.objects.getWithETag("r/a"))
        await self.objects.delete("r/a")

    async def test_conditionalPuts(self):
        """
        C{ifNoneMatch} creates only once; C{ifMatch} with the current
        (unquoted, as returned) ETag replaces, with a stale one fails.
        """
        first = await self.objects.put("c", b"1", ifNoneMatch=True)
        with self.assertRaises(PreconditionFailed):
            await self.objects.put("c", b"2", ifNoneMatch=True)
        second = await self.objects.put("c", b"3", ifMatch=first)
        self.assertEqual(await self.objects.get("c"), b"3")
        with self.assertRaises(PreconditionFailed):
            await self.objects.put("c", b"4", ifMatch=first)
        # A quoted ETag (as some callers hold them) works too.
        await self.objects.put("c", b"5", ifMatch=f'"{second}"')
        self.assertEqual(await self.objects.get("c"), b"5")

    async def test_listPagesAndPrefixes(self):
        """
        A listing returns every key across pages, with sizes, and with a
        delimiter the common prefixes.
        """
        keys = [f"l/{i:04d}" for i in range(1005)] + ["l/sub/x", "l/sub2/y", "other"]
        await self.objects.runner.run(
            lambda: [self.s3.put_object(Bucket=self.bucket, Key=k, Body=b"xy") for k in keys]
        )
        listing = await self.objects.list("l/")
        self.assertEqual(sorted(o.key for o in listing.objects), sorted(keys[:-1]))
        self.assertEqual({o.size for o in listing.objects}, {2})
        self.assertEqual(listing.prefixes, [])
        shallow = await self.objects.list("l/", delimiter="/")
        self.assertEqual(len(shallow.objects), 1005)
        self.assertEqual(shallow.prefixes, ["l/sub/", "l/sub2/"])
        page, token = await self.objects.listPage("l/")
        self.assertEqual(len(page.objects), 1000)
        self.assertIsNotNone(token)
        await self.objects.deleteMany(o.key for o in listing.objects)
        self.assertEqual((await self.objects.list("l/")).objects, [])

    async def test_multipart(self):
        """
        A multipart upload of parts sent from pool threads completes into
        the object; an aborted one leaves nothing and is no longer listed.
        """
        parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(100)]
        mpu = await self.objects.createMultipart("m/data")
        listed = await self.objects.listMultipart("m/")
        self.assertEqual([(u.key, u.uploadID) for u in listed], [("m/data", mpu)])
        etags = []
        for n, data in enumerate(parts, 1):
            etags.append((n, await self.objects.uploadPart("m/data", mpu, n, data)))
        await self.objects.completeMultipart("m/data", mpu, etags)
        whole = b"".join(parts)
        self.assertEqual(await self.objects.head("m/data"), len(whole))
        self.assertEqual(await self.objects.get("m/data"), whole)
        self.assertEqual(await self.objects.listMultipart("m/"), [])

        mpu = await self.objects.createMultipart("m/aborted")
        await self.objects.uploadPart("m/aborted", mpu, 1, b"x" * 10)
        await self.objects.abortMultipart("m/aborted", mpu)
        await self.objects.abortMultipart("m/aborted", mpu)
        self.assertIsNone(await self.objects.head("m/aborted"))
        self.assertEqual(await self.objects.listMultipart("m/"), [])

    async def test_copy(self):
        """
        A server-side copy duplicates an object; copying a missing one is a
        L{KeyError}.
        """
        data = os.urandom(3 * MiB)
        await self.objects.put("src", data)
        await self.objects.copy("src", "dst", len(data))
        await self.objects.copy("src", "dst2")
        self.assertEqual(await self.objects.get("dst"), data)
        self.assertEqual(await self.objects.get("dst2"), data)
        with self.assertRaises(KeyError):
            await self.objects.copy("nothing", "dst3")

    async def test_multipartCopy(self):
        """
        Beyond the single-copy limit, the copy goes part by part (limits
        lowered for the test) and gives the same bytes.
        """
        from zotwist.storage.s3 import objects as module

        self.patch(module, "COPY_LIMIT", 6 * MiB)
        self.patch(module, "COPY_PART", 5 * MiB)
        data = os.urandom(12 * MiB + 3)
        await self.objects.put("big", data)
        await self.objects.copy("big", "bigcopy", len(data))
        self.assertEqual(await self.objects.get("bigcopy"), data)
        self.assertEqual(await self.objects.listMultipart(""), [])

    async def test_openRange(self):
        """
        A ranged GET is read in pieces, off the reactor thread, up to the
        end of the range.
        """
        data = os.urandom(3 * MiB + 17)
        await self.objects.put("r", data)
        reader = await self.objects.openRange("r", 100, 2 * MiB + 99)
        threads = []
        original = reader._read

        def recording(size):
            threads.append(threading.current_thread() is threading.main_thread())
            return original(size)

        reader._read = recording
        pieces = []
        while True:
            piece = await reader.read(MiB)
            if not piece:
                break
            pieces.append(piece)
        reader.close()
        self.assertEqual(b"".join(pieces), data[100 : 2 * MiB + 100])
        self.assertEqual([len(p) for p in pieces], [MiB, MiB])
        self.assertEqual(reader.position, 2 * MiB + 100)
        self.assertNotIn(True, threads)
        tail = await self.objects.openRange("r", 3 * MiB)
        self.assertEqual(await tail.read(MiB), data[3 * MiB :])
        tail.close()
        with self.assertRaises(KeyError):
            await self.objects.openRange("missing", 0)

    async def test_presign(self):
        """
        A presigned URL lets a client without credentials GET the object.
        """
        import urllib.request

        await self.objects.put("p/obj", b"presigned")
        url = await self.objects.presign("p/obj", 60)

        def fetch():
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read()

        self.assertEqual(await self.objects.runner.run(fetch), b"presigned")


class DriverFlagTests(SynchronousTestCase):
    """
    L{driverFlag}: the boolean keys of C{storageDriver} as zot configs
    write them, JSON booleans or strings.
    """

    def test_strings(self):
        """
        C{"false"}, C{"0"} and C{"no"} are false (not truthy non-empty
        strings); C{"true"}, C{"1"} and C{"yes"} are true, in any case.
        """
        for text in ("false", "FALSE", "0", "no", "off", ""):
            self.assertFalse(driverFlag(text, True), text)
        for text in ("true", "True", "1", "yes", "on"):
            self.assertTrue(driverFlag(text, False), text)

    def test_booleansAndDefault(self):
        """
        JSON booleans are taken as they are; a missing key is the default.
        """
        self.assertFalse(driverFlag(False, True))
        self.assertTrue(driverFlag(True, False))
        self.assertTrue(driverFlag(None, True))
        self.assertFalse(driverFlag(None, False))
