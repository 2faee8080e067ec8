"""
Tests for L{zotwist.storage.s3.store.S3Store} (with
L{zotwist.storage.s3.metadata} and L{zotwist.storage.s3.rebuild}) against a
real Ceph RADOS Gateway and a real C{redis-server}
(L{tests.clustersupport}).

Each test gets a fresh bucket; the Redis key prefix contains the bucket's
name, so tests sharing the server never see each other's keys.  Several
L{S3Store}s on one bucket and Redis play several zotwist instances.
"""

import json
import os
import subprocess
import tempfile

from botocore.exceptions import ClientError
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.apihelpers import descriptor, digestOf, imageManifest
from tests.clustersupport import cephS3, newBucket, redisServer, s3StorageConfig
from tests.images import writeImage
from tests.procsupport import waitUntil
from zotwist import oci
from zotwist.coordination.client import RedisClient, storePrefix
from zotwist.errors import ManifestBlobsUnknown, RegistryError
from zotwist.storage.interfaces import IRegistryStore
from zotwist.storage.s3.blobs import S3Blobs
from zotwist.storage.s3.metadata import IndexWriteRefused
from zotwist.storage.s3.objects import ObjectStore
from zotwist.storage.s3.store import S3Store
from zotwist.threads import ThreadPoolRunner

CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class S3Case(TestCase):
    """
    A fresh bucket, the shared Redis, a thread pool, and a way to start
    store instances on them.
    """

    rootdirectory = "/zot"

    def setUp(self):
        self.endpoint = cephS3()
        self.bucket = newBucket(self.endpoint)
        self.redisEndpoint = redisServer()
        self.runner = ThreadPoolRunner(reactor, minThreads=2, maxThreads=16, name="test-s3")
        self.runner.startService()
        self.addCleanup(self.runner.stopService)
        self.s3 = self.endpoint.client()
        self.redis = self.redisEndpoint.client()
        self.addCleanup(lambda: self.redis.close())
        self.prefix = storePrefix(self.bucket, self.rootdirectory)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def objectKey(self, name: str, *parts: str) -> str:
        return "/".join([self.rootdirectory.strip("/"), name, *parts])

    def inS3(self, name: str, digest: str) -> bool:
        """
        Whether the bucket holds C{digest}'s blob object in C{name}.
        """
        try:
            self.s3.head_object(
                Bucket=self.bucket,
                Key=self.objectKey(name, "blobs", "sha256", digest.split(":")[1]),
            )
        except ClientError:
            return False
        return True

    def inRedis(self, name: str, digest: str) -> bool:
        return bool(self.redis.hexists(self.key("blobs", name), digest))

    def assertHeld(self, name: str, digests) -> None:
        for digest in digests:
            self.assertTrue(self.inS3(name, digest), f"{digest} missing in S3")
            self.assertTrue(self.inRedis(name, digest), f"{digest} missing in Redis")

    def assertGone(self, name: str, digests) -> None:
        for digest in digests:
            self.assertFalse(self.inS3(name, digest), f"{digest} still in S3")
            self.assertFalse(self.inRedis(name, digest), f"{digest} still in Redis")

    async def instance(self, **kwargs) -> S3Store:
        """
        Start one store instance (as one zotwist process would) and stop it
        when the test ends.
        """
        objects = ObjectStore(
            self.runner, self.endpoint.url, self.bucket, self.endpoint.accessKey,
            self.endpoint.secretKey, self.endpoint.region, False, False, True,
        )
        redis = RedisClient(self.redisEndpoint.url, self.runner, self.prefix)
        blobs = S3Blobs(objects, redis, self.rootdirectory)
        store = S3Store(
            objects, redis, blobs, self.runner, reactor, self.rootdirectory, **kwargs
        )
        await store.startService()
        self.addCleanup(lambda: ensureDeferred(store.stopService()))
        return store

    async def pushBlob(self, store: S3Store, name: str, data: bytes) -> str:
        """
        Put C{data} into C{name} as a blob, the way a finished upload does.
        """
        digest = digestOf(data)
        writer = store.writerForMonolithic(name, "sha256", len(data))
        writer.write(data)
        size = await store.commitMonolithic(name, digest, writer)
        writer.close()
        self.assertEqual(size, len(data))
        return digest

    async def pushImage(self, store: S3Store, name: str, tag: str | None, seed: str) -> tuple:
        """
        Push a small image (config + one layer) and its manifest.

        @return: C{(manifestDigest, manifestBytes, [configDigest, layerDigest])}.
        """
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
        layer = f"layer of {seed}".encode() * 50
        await self.pushBlob(store, name, config)
        await self.pushBlob(store, name, layer)
        body = imageManifest(descriptor(CONFIG, config), [descriptor(LAYER, layer)])
        digest = digestOf(body)
        await store.putManifest(name, body, oci.OCI_MANIFEST, tag or digest, [])
        return digest, body, [digestOf(config), digestOf(layer)]

    def s3Index(self, name: str) -> dict:
        """
        The repository's C{index.json} as S3 holds it.
        """
        found = self.s3.get_object(Bucket=self.bucket, Key=self.objectKey(name, "index.json"))
        return json.loads(found["Body"].read())

    def s3Tags(self, name: str) -> dict:
        """
        Tag -> digest from the repository's C{index.json} in S3.
        """
        return {
            m["annotations"][oci.REF_NAME]: m["digest"]
            for m in self.s3Index(name)["manifests"]
            if oci.REF_NAME in (m.get("annotations") or {})
        }


class S3StoreTests(S3Case):
    """
    Two instances on one bucket and Redis behave as one registry.
    """

    def test_interface(self):
        """
        L{S3Store} provides L{IRegistryStore}.
        """
        from zope.interface.verify import verifyClass

        self.assertTrue(verifyClass(IRegistryStore, S3Store))

    def test_pushThroughOneReadThroughOther(self):
        """
        A manifest pushed through one instance is listed, served and stat'ed
        by the other, which never saw it in memory: tags, catalog, manifest
        bytes, media type and size.  The repository's S3 prefix holds an
        OCI layout (C{oci-layout}, C{index.json}, the manifest as a blob).
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            digest, body, blobs = await self.pushImage(a, "team/app", "v1", "one")
            self.assertEqual(await b.listTags("team/app"), ["v1"])
            self.assertEqual(await b.catalog(), ["team/app"])
            self.assertTrue(await b.repositoryExists("team/app"))
            self.assertFalse(await b.repositoryExists("team/other"))
            got, mediaType, gotDigest = await b.getManifest("team/app", "v1")
            self.assertEqual((got, mediaType, gotDigest), (body, oci.OCI_MANIFEST, digest))
            self.assertEqual(
                await b.statManifest("team/app", digest), (len(body), oci.OCI_MANIFEST, digest)
            )
            for blob in blobs:
                self.assertIsNotNone(await b.statBlob("team/app", blob))
            layout = self.s3.get_object(
                Bucket=self.bucket, Key=self.objectKey("team/app", "oci-layout")
            )["Body"].read()
            self.assertEqual(json.loads(layout), {"imageLayoutVersion": "1.0.0"})
            self.assertEqual(self.s3Tags("team/app"), {"v1": digest})
            stored = self.s3.get_object(
                Bucket=self.bucket,
                Key=self.objectKey("team/app", "blobs", "sha256", digest.split(":")[1]),
            )["Body"].read()
            self.assertEqual(stored, body)
            # A retag through B is seen by A (whose parsed cache is older).
            await b.putManifest("team/app", body, oci.OCI_MANIFEST, "latest", [])
            self.assertEqual(await a.listTags("team/app"), ["latest", "v1"])
            with self.assertRaises(RegistryError) as raised:
                await b.getManifest("team/app", "nope")
            self.assertEqual(raised.exception.code, "MANIFEST_UNKNOWN")
            with self.assertRaises(RegistryError) as raised:
                await b.listTags("team/none")
            self.assertEqual(raised.exception.code, "NAME_UNKNOWN")

        return ensureDeferred(run())

    def test_readsNeedNoS3(self):
        """
        Once an instance has read a manifest, tag listings and manifest
        reads are answered without any S3 request, even after another
        instance changed the tags (the new index comes from Redis).
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            digest, body, _ = await self.pushImage(a, "app", "v1", "one")
            await b.getManifest("app", "v1")
            await a.putManifest("app", body, oci.OCI_MANIFEST, "v2", [])
            calls = []
            for method in ("get", "getWithETag", "head", "list"):
                original = getattr(b.objects, method)

                def spy(*args, _method=method, _original=original, **kwargs):
                    calls.append(_method)
                    return _original(*args, **kwargs)

                setattr(b.objects, method, spy)
            self.assertEqual(await b.listTags("app"), ["v1", "v2"])
            self.assertEqual((await b.getManifest("app", "v2"))[2], digest)
            self.assertEqual((await b.statManifest("app", "v1"))[2], digest)
            self.assertEqual(await b.catalog(), ["app"])
            self.assertEqual(calls, [])

        return ensureDeferred(run())

    def test_manifestBytesFromRedis(self):
        """
        An instance reads a manifest another instance pushed from the copy
        in Redis, without an S3 GET; a copy in Redis that does not have the
        digest is ignored (the bytes come from S3).
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            c = await self.instance()
            digest, body, _ = await self.pushImage(a, "cached", "v1", "c")
            gets = []
            for store in (b, c):
                original = store.objects.get

                def spy(key, *args, _original=original, **kwargs):
                    gets.append(key)
                    return _original(key, *args, **kwargs)

                store.objects.get = spy
            self.assertEqual(await b.getManifest("cached", "v1"), (body, oci.OCI_MANIFEST, digest))
            self.assertEqual(gets, [])
            self.redis.set(self.key("manifest", digest), b'{"not": "it"}')
            self.assertEqual(await c.getManifest("cached", "v1"), (body, oci.OCI_MANIFEST, digest))
            self.assertEqual(gets, [self.objectKey("cached", "blobs", *digest.split(":"))])
            # The bytes read from S3 replaced the bad copy.
            self.assertEqual(self.redis.get(self.key("manifest", digest)), body)

        return ensureDeferred(run())

    def test_concurrentTagsFromTwoInstances(self):
        """
        Sixteen tag pushes to one repository at once, half through each
        instance: every tag ends up in the index, in Redis and in S3.
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            images = {}
            for i in range(16):
                config = f'{{"n": {i}}}'.encode()
                store = a if i % 2 else b
                await self.pushBlob(store, "busy", config)
                images[f"t{i}"] = imageManifest(descriptor(CONFIG, config), [])
            await gatherResults(
                [
                    ensureDeferred(
                        (a if i % 2 else b).putManifest(
                            "busy", images[f"t{i}"], oci.OCI_MANIFEST, f"t{i}", []
                        )
                    )
                    for i in range(16)
                ],
                consumeErrors=True,
            )
            expected = {tag: digestOf(body) for tag, body in images.items()}
            self.assertEqual(self.s3Tags("busy"), expected)
            self.assertEqual(await a.listTags("busy"), sorted(expected))
            self.assertEqual(await b.listTags("busy"), sorted(expected))
            for tag, digest in expected.items():
                self.assertEqual((await a.getManifest("busy", tag))[2], digest)

        return ensureDeferred(run())

    def test_groupCommitAcrossInstances(self):
        """
        Tag pushes queued on two instances while a third holds the
        repository lock are written by whichever instance gets the lock
        next, all of them in one conditional S3 write of C{index.json}; the
        other instance's pushes are answered through Redis.
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            c = await self.instance()
            images = {}
            for i in range(6):
                config = f'{{"g": {i}}}'.encode()
                await self.pushBlob(a, "group", config)
                images[f"g{i}"] = imageManifest(descriptor(CONFIG, config), [])
            writes = []
            for store in (a, b):
                original = store.objects.put

                def counting(key, data, *args, original=original, **kwargs):
                    if key.endswith("/index.json"):
                        writes.append(key)
                    return original(key, data, *args, **kwargs)

                store.objects.put = counting
            holder = await c.locks.acquire("group")
            pushes = gatherResults(
                [
                    ensureDeferred(
                        (a if i % 2 else b).putManifest(
                            "group", images[f"g{i}"], oci.OCI_MANIFEST, f"g{i}", []
                        )
                    )
                    for i in range(6)
                ],
                consumeErrors=True,
            )
            queue = self.key("indexq", "group")
            await waitUntil(lambda: self.redis.llen(queue) == 6, 20, "the pushes never queued")
            self.assertFalse(pushes.called)
            await holder.release()
            await pushes
            self.assertEqual(writes, [self.objectKey("group", "index.json")])
            expected = {tag: digestOf(body) for tag, body in images.items()}
            self.assertEqual(self.s3Tags("group"), expected)
            for store in (a, b, c):
                self.assertEqual(await store.listTags("group"), sorted(expected))
            self.assertFalse(self.redis.exists(queue))
            self.assertFalse(self.redis.exists(self.key("lock", "group")))

        return ensureDeferred(run())

    def test_jobsOfDeadHolderApplied(self):
        """
        A holder that took the queued changes and died before writing them
        delays them only until its lock expires: their submitter then
        applies them itself.
        """

        async def run():
            alive = await self.instance()
            dead = await self.instance(lockTTL=0.5)
            digest, body, _ = await self.pushImage(alive, "taken", "v1", "t")
            await dead.locks.acquire("taken")
            push = ensureDeferred(alive.putManifest("taken", body, oci.OCI_MANIFEST, "v2", []))
            queue = self.key("indexq", "taken")
            await waitUntil(lambda: self.redis.llen(queue) == 1, 20, "the push never queued")
            # The holder takes the queue... and dies.
            self.redis.delete(queue)
            await push
            self.assertEqual(sorted(self.s3Tags("taken")), ["v1", "v2"])
            self.assertEqual(await dead.listTags("taken"), ["v1", "v2"])

        return ensureDeferred(run())

    def test_writerReplaysChangeLog(self):
        """
        An instance whose parsed index is a few changes old brings it up to
        date from the change log in Redis instead of parsing the index
        again; a log that does not reproduce the current index (here:
        tampered with) is caught by the ETag, and the index is parsed.
        """
        from zotwist.storage.s3 import metadata

        async def run():
            a = await self.instance()
            b = await self.instance()
            bodies = {}
            for i in range(6):
                config = f'{{"l": {i}}}'.encode()
                await self.pushBlob(a, "logged", config)
                bodies[f"l{i}"] = imageManifest(descriptor(CONFIG, config), [])
            parsed = []
            original = metadata.parseEntries

            def counting(data):
                parsed.append(data)
                return original(data)

            self.patch(metadata, "parseEntries", counting)
            await a.putManifest("logged", bodies["l0"], oci.OCI_MANIFEST, "l0", [])
            await b.putManifest("logged", bodies["l1"], oci.OCI_MANIFEST, "l1", [])
            await b.putManifest("logged", bodies["l2"], oci.OCI_MANIFEST, "l2", [])
            await b.deleteManifest("logged", "l1")
            before = len(parsed)
            await a.putManifest("logged", bodies["l3"], oci.OCI_MANIFEST, "l3", [])
            self.assertEqual(len(parsed), before)  # replayed, not parsed
            self.assertEqual(sorted(self.s3Tags("logged")), ["l0", "l2", "l3"])
            # b's change, then a log entry that says otherwise.
            await b.putManifest("logged", bodies["l4"], oci.OCI_MANIFEST, "l4", [])
            log = self.key("indexlog", "logged")
            last = self.redis.lindex(log, -1).decode()
            version = last.split(" ", 1)[0]
            self.redis.lset(log, -1, version + ' [["untag","l0"]]')
            await a.putManifest("logged", bodies["l5"], oci.OCI_MANIFEST, "l5", [])
            self.assertEqual(len(parsed), before + 1)
            expected = ["l0", "l2", "l3", "l4", "l5"]
            self.assertEqual(sorted(self.s3Tags("logged")), expected)
            self.assertEqual(await b.listTags("logged"), expected)

        return ensureDeferred(run())

    def test_readerReplaysChangeLog(self):
        """
        An instance that wrote the index before reads the next versions
        another instance wrote by replaying the change log into the entries
        it kept, without parsing the index; a log that does not give the
        current ETag (tampered with) is dropped for a parse.
        """
        from zotwist.storage.s3 import metadata

        async def run():
            a = await self.instance()
            b = await self.instance()
            bodies = {}
            for i in range(5):
                config = f'{{"r": {i}}}'.encode()
                await self.pushBlob(a, "read", config)
                bodies[f"r{i}"] = imageManifest(descriptor(CONFIG, config), [])
            parsed = []
            original = metadata.parseIndex

            def counting(data, signature):
                parsed.append(data)
                return original(data, signature)

            self.patch(metadata, "parseIndex", counting)
            await a.putManifest("read", bodies["r0"], oci.OCI_MANIFEST, "r0", [])
            self.assertEqual(await a.listTags("read"), ["r0"])
            await b.putManifest("read", bodies["r1"], oci.OCI_MANIFEST, "r1", [])
            await b.putManifest("read", bodies["r2"], oci.OCI_MANIFEST, "r2", [])
            before = len(parsed)
            self.assertEqual(await a.listTags("read"), ["r0", "r1", "r2"])
            self.assertEqual(
                (await a.getManifest("read", "r2"))[2], digestOf(bodies["r2"])
            )
            self.assertEqual(len(parsed), before)
            await b.putManifest("read", bodies["r3"], oci.OCI_MANIFEST, "r3", [])
            log = self.key("indexlog", "read")
            version = self.redis.lindex(log, -1).decode().split(" ", 1)[0]
            self.redis.lset(log, -1, version + ' [["untag","r0"]]')
            self.assertEqual(await a.listTags("read"), ["r0", "r1", "r2", "r3"])
            self.assertEqual(len(parsed), before + 1)

        return ensureDeferred(run())

    def test_layoutReadableBySkopeo(self):
        """
        The repository prefix, downloaded as it is, is an OCI layout that
        C{skopeo inspect} reads: the tag resolves to the pushed manifest
        and its layers.
        """

        async def run():
            store = await self.instance()
            source = tempfile.mkdtemp(prefix="zotwist-img-")
            self.addCleanup(subprocess.run, ["rm", "-rf", source])
            image = writeImage(source, layers=2, layerSize=4096, seed=7)
            manifest = open(
                os.path.join(source, "blobs", "sha256", image["digest"].split(":")[1]), "rb"
            ).read()
            document = json.loads(manifest)
            for blob in [document["config"], *document["layers"]]:
                path = os.path.join(source, "blobs", "sha256", blob["digest"].split(":")[1])
                with open(path, "rb") as f:
                    await self.pushBlob(store, "img/one", f.read())
            await store.putManifest("img/one", manifest, oci.OCI_MANIFEST, "1.0", [])
            target = tempfile.mkdtemp(prefix="zotwist-dl-")
            self.addCleanup(subprocess.run, ["rm", "-rf", target])
            prefix = self.objectKey("img/one") + "/"
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    path = os.path.join(target, item["Key"][len(prefix):])
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    self.s3.download_file(self.bucket, item["Key"], path)
            result = subprocess.run(
                ["skopeo", "inspect", f"oci:{target}:1.0"],
                capture_output=True, text=True, timeout=60,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            inspected = json.loads(result.stdout)
            self.assertEqual(inspected["Digest"], image["digest"])
            self.assertEqual(inspected["Layers"], [d["digest"] for d in document["layers"]])
            self.assertEqual(inspected["Architecture"], "amd64")

        return ensureDeferred(run())

    def test_manifestBlobUnknown(self):
        """
        A manifest naming a blob the repository does not hold is refused
        with C{MANIFEST_BLOB_UNKNOWN} (and nothing is tagged), even when
        another repository holds it.
        """

        async def run():
            store = await self.instance()
            config = b'{"a": 1}'
            await self.pushBlob(store, "elsewhere", config)
            body = imageManifest(descriptor(CONFIG, config), [])
            with self.assertRaises(ManifestBlobsUnknown) as raised:
                await store.putManifest("here", body, oci.OCI_MANIFEST, "v1", [])
            self.assertEqual(raised.exception.digests, [digestOf(config)])
            self.assertFalse(await store.repositoryExists("here"))

        return ensureDeferred(run())

    def test_deleteAcrossInstances(self):
        """
        Untagging through one instance leaves the manifest reachable by
        digest; deleting it by digest through the other removes every tag
        naming it.  Both instances agree at each step.
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            digest, body, _ = await self.pushImage(a, "del", "one", "d")
            await a.putManifest("del", body, oci.OCI_MANIFEST, "two", [])
            await b.deleteManifest("del", "one")
            self.assertEqual(await a.listTags("del"), ["two"])
            await a.deleteManifest("del", "two")
            self.assertEqual(await b.listTags("del"), [])
            self.assertEqual((await b.getManifest("del", digest))[2], digest)
            await b.putManifest("del", body, oci.OCI_MANIFEST, "three", [])
            await a.deleteManifest("del", digest)
            with self.assertRaises(RegistryError) as raised:
                await b.getManifest("del", digest)
            self.assertEqual(raised.exception.code, "MANIFEST_UNKNOWN")
            self.assertEqual(await b.listTags("del"), [])
            self.assertEqual(self.s3Index("del")["manifests"], [])
            with self.assertRaises(RegistryError) as raised:
                await b.deleteManifest("del", "three")
            self.assertEqual(raised.exception.code, "MANIFEST_UNKNOWN")

        return ensureDeferred(run())

    def test_referrersAcrossInstances(self):
        """
        A referrer pushed through one instance is listed for its subject
        by the other.
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            subject, body, _ = await self.pushImage(a, "ref", "v1", "s")
            empty = b"{}"
            await self.pushBlob(a, "ref", empty)
            referrer = imageManifest(
                descriptor(oci.OCI_EMPTY, empty), [],
                artifactType="application/vnd.example.sig",
                subject={"mediaType": oci.OCI_MANIFEST, "digest": subject, "size": len(body)},
            )
            await a.putManifest("ref", referrer, oci.OCI_MANIFEST, digestOf(referrer), [])
            found = await b.referrers("ref", subject)
            self.assertEqual([info.digest for info in found], [digestOf(referrer)])
            self.assertEqual(found[0].artifactType, "application/vnd.example.sig")
            self.assertEqual(await b.referrers("ref", digestOf(referrer)), [])
            self.assertEqual(await b.referrers("unknown", subject), [])

        return ensureDeferred(run())

    def test_fromConfig(self):
        """
        L{S3Store.fromConfig} builds a working store from zot's C{storage}
        section (C{storageDriver} s3 + C{cacheDriver} redis) as
        L{zotwist.config} parses it.
        """
        from zotwist.config import StorageConfig

        async def run():
            section = s3StorageConfig(
                self.endpoint, self.bucket, self.redisEndpoint.url, self.rootdirectory
            )
            config = StorageConfig(
                rootDirectory=section["rootDirectory"],
                storageDriver=section["storageDriver"],
                cacheDriver=section["cacheDriver"],
            )
            store = S3Store.fromConfig(config, self.runner, reactor)
            await store.startService()
            self.addCleanup(lambda: ensureDeferred(store.stopService()))
            other = await self.instance()
            digest, body, _ = await self.pushImage(other, "cfg", "v1", "c")
            self.assertEqual(await store.listTags("cfg"), ["v1"])
            self.assertEqual(store.redis.prefix, self.prefix)
            self.assertEqual(store.root, section["rootDirectory"])
            # A chunked upload through it, bigger than one S3 part.
            data = os.urandom(6 * 1024 * 1024 + 17)
            uploadID = await store.startUpload("cfg", "sha256")
            for start in range(0, len(data), 4 * 1024 * 1024):
                chunk = data[start:start + 4 * 1024 * 1024]
                writer = store.writerForSession("cfg", uploadID, start, len(chunk))
                writer.write(chunk)
                await writer.flushed()
                writer.close()
            self.assertEqual(
                await store.completeUpload("cfg", uploadID, digestOf(data), None), len(data)
            )
            self.assertEqual(await other.statBlob("cfg", digestOf(data)), len(data))
            ttl = self.redis.ttl(self.key("upload", await store.startUpload("cfg", "sha256")))
            self.assertGreater(ttl, 86400)
            self.assertLessEqual(ttl, 86400 + 3600)
            await store.stopService()
            self.assertEqual([r.running for r in store._ownedRunners], [False])

        return ensureDeferred(run())


class RebuildTests(S3Case):
    """
    Redis emptied: the state comes back from the bucket.
    """

    def test_flushallThenRebuild(self):
        """
        After FLUSHALL, a new instance rebuilds the state from S3 and
        answers the same catalog, tags, manifests and blobs; an instance
        that was already running notices and answers too.
        """

        async def run():
            a = await self.instance()
            pushed = {}
            for name in ("alpha", "beta/nested", "gamma"):
                digest, body, blobs = await self.pushImage(a, name, "v1", name)
                pushed[name] = (digest, body, blobs)
            await self.pushBlob(a, "blobsonly", b"just a blob")
            await a.putManifest("alpha", pushed["alpha"][1], oci.OCI_MANIFEST, "v2", [])
            await a.putManifest("gamma", pushed["gamma"][1], oci.OCI_MANIFEST, "v2", [])
            before = {
                "catalog": await a.catalog(),
                "tags": {n: await a.listTags(n) for n in pushed},
            }
            self.redisEndpoint.flushall()
            self.assertFalse(self.redis.exists(self.key("ready")))
            b = await self.instance()
            self.assertTrue(self.redis.exists(self.key("ready")))
            self.assertEqual(await b.catalog(), before["catalog"])
            self.assertEqual(
                before["catalog"], ["alpha", "beta/nested", "blobsonly", "gamma"]
            )
            for name, (digest, body, blobs) in pushed.items():
                self.assertEqual(await b.listTags(name), before["tags"][name])
                self.assertEqual(await b.getManifest(name, "v1"), (body, oci.OCI_MANIFEST, digest))
                for blob in blobs + [digest]:
                    self.assertIsNotNone(await b.statBlob(name, blob))
                self.assertEqual(
                    int(self.redis.hget(self.key("blobs", name), blobs[0])),
                    self.s3.head_object(
                        Bucket=self.bucket,
                        Key=self.objectKey(name, "blobs", "sha256", blobs[0].split(":")[1]),
                    )["ContentLength"],
                )
                self.assertIn(name.encode(), self.redis.smembers(self.key("holders", blobs[0])))
            self.assertIsNotNone(await b.statBlob("blobsonly", digestOf(b"just a blob")))
            # Writes after the rebuild are conditional on the restored ETag.
            await b.putManifest("gamma", pushed["gamma"][1], oci.OCI_MANIFEST, "v3", [])
            self.assertEqual(sorted(self.s3Tags("gamma")), ["v1", "v2", "v3"])
            # The instance that ran through the flush answers as well: the
            # version it cached before the flush never means other content.
            self.assertEqual(await a.listTags("gamma"), ["v1", "v2", "v3"])
            self.assertEqual(await a.catalog(), before["catalog"])

        return ensureDeferred(run())

    def test_oneInstanceRebuildsOthersWait(self):
        """
        Three instances starting at once on an empty Redis: exactly one
        rebuilds (the holder of the rebuild lock), the others wait for
        C{ready}, and all three answer from the restored state.
        """
        from twisted.logger import globalLogPublisher

        async def run():
            a = await self.instance()
            digest, _, _ = await self.pushImage(a, "shared", "v1", "shared")
            self.redisEndpoint.flushall()
            events = []

            def observe(event):
                text = event.get("log_format") or ""
                if text.startswith("Rebuilt the Redis state") and event.get(
                    "log_namespace", ""
                ).startswith("zotwist.storage.s3.rebuild"):
                    events.append(event)

            globalLogPublisher.addObserver(observe)
            self.addCleanup(globalLogPublisher.removeObserver, observe)
            stores = await gatherResults(
                [ensureDeferred(self.instance()) for _ in range(3)], consumeErrors=True
            )
            self.assertEqual(len(events), 1)
            for store in stores:
                self.assertEqual(await store.listTags("shared"), ["v1"])
                self.assertEqual((await store.getManifest("shared", "v1"))[2], digest)

        return ensureDeferred(run())

    def test_runningInstanceRebuildsOnItsOwn(self):
        """
        When Redis restarts empty under a running instance, its next read
        reconnects and rebuilds the state (nobody else is there to do it).
        """

        async def run():
            a = await self.instance()
            digest, _, _ = await self.pushImage(a, "solo", "v1", "solo")
            self.redisEndpoint.restart()
            self.redis.close()
            self.redis = self.redisEndpoint.client()
            self.assertEqual(await a.listTags("solo"), ["v1"])
            self.assertEqual((await a.getManifest("solo", "v1"))[2], digest)
            self.assertTrue(self.redis.exists(self.key("ready")))

        return ensureDeferred(run())


class FencingTests(S3Case):
    """
    The index write of a holder whose lock was lost never lands.
    """

    def test_staleHolderWriteRefused(self):
        """
        A holder whose lock expires after its last check (it paused) and
        whose repository another instance changed meanwhile gets 412 from
        S3: its request fails with L{IndexWriteRefused} (503) and the other
        instance's change is what S3 and Redis hold.
        """

        async def run():
            a = await self.instance()
            b = await self.instance()
            digest, body, _ = await self.pushImage(a, "fenced", "v1", "f")
            stale = await a.locks.acquire("fenced")
            original = stale.ensure

            async def ensureThenLose(margin=None):
                await original(margin)
                # The holder pauses here; its lock expires in Redis...
                self.redis.delete(self.key("lock", "fenced"))
                # ...and another instance changes the repository.
                await b.putManifest("fenced", body, oci.OCI_MANIFEST, "fresh", [])

            stale.ensure = ensureThenLose
            descriptorOf = {"mediaType": oci.OCI_MANIFEST, "digest": digest, "size": len(body)}

            async def tagStale(entries):
                entries.tag("stale", descriptorOf)
                return True, None

            with self.assertRaises(IndexWriteRefused) as raised:
                await a.metadata.writeLocked("fenced", stale, [tagStale])
            self.assertEqual(raised.exception.status, 503)
            self.assertEqual(sorted(self.s3Tags("fenced")), ["fresh", "v1"])
            self.assertEqual(await a.listTags("fenced"), ["fresh", "v1"])
            self.assertEqual(await b.listTags("fenced"), ["fresh", "v1"])
            self.assertFalse(await stale.release())

        return ensureDeferred(run())

    def test_lockNotObtained(self):
        """
        While another instance holds the repository lock for longer than a
        change may wait, the change fails with a 503 the client may retry
        (C{Retry-After}) and nothing is written; once the lock is free the
        same change succeeds.
        """

        async def run():
            a = await self.instance(lockWait=0.3)
            b = await self.instance()
            digest, body, _ = await self.pushImage(a, "held", "v1", "h")
            holder = await b.locks.acquire("held")
            with self.assertRaises(IndexWriteRefused) as raised:
                await a.putManifest("held", body, oci.OCI_MANIFEST, "v2", [])
            self.assertEqual(raised.exception.status, 503)
            self.assertEqual(raised.exception.headers, {"Retry-After": "1"})
            self.assertEqual(sorted(self.s3Tags("held")), ["v1"])
            await holder.release()
            await a.putManifest("held", body, oci.OCI_MANIFEST, "v2", [])
            self.assertEqual(await b.listTags("held"), ["v1", "v2"])

        return ensureDeferred(run())

    def test_deadInstanceLockExpires(self):
        """
        An instance that died holding a repository's lock (it never
        releases) holds up the others' changes only until the lock's TTL:
        their pushes then succeed.
        """

        async def run():
            dead = await self.instance(lockTTL=0.5)
            alive = await self.instance()
            digest, body, _ = await self.pushImage(alive, "orphaned", "v1", "o")
            await dead.locks.acquire("orphaned")  # and then it dies
            await alive.putManifest("orphaned", body, oci.OCI_MANIFEST, "v2", [])
            self.assertEqual(sorted(self.s3Tags("orphaned")), ["v1", "v2"])
            self.assertEqual(await alive.listTags("orphaned"), ["v1", "v2"])

        return ensureDeferred(run())

    def test_currentHolderRereadsAfterStaleWrite(self):
        """
        When a paused ex-holder's write slipped into S3 just before the
        current holder's, the current holder's conditional write gets 412;
        as it still holds the lock it re-reads S3 and retries, so both
        changes end up in S3 and Redis.
        """

        async def run():
            a = await self.instance()
            digest, body, _ = await self.pushImage(a, "race", "v1", "r")
            entry = {"mediaType": oci.OCI_MANIFEST, "digest": digest, "size": len(body)}
            held = await a.locks.acquire("race")
            original = held.ensure
            slipped = []

            async def ensureThenSlip(margin=None):
                await original(margin)
                if slipped:
                    return
                # The ex-holder's late write, based on the index it read.
                indexKey = self.objectKey("race", "index.json")
                current = self.s3.get_object(Bucket=self.bucket, Key=indexKey)
                document = json.loads(current["Body"].read())
                document["manifests"].append(
                    dict(entry, annotations={oci.REF_NAME: "late"})
                )
                self.s3.put_object(
                    Bucket=self.bucket, Key=indexKey, Body=json.dumps(document).encode(),
                    IfMatch=current["ETag"].strip('"'),
                )
                slipped.append(True)

            held.ensure = ensureThenSlip

            async def tagCurrent(entries):
                entries.tag("current", entry)
                return True, None

            ((ok, _),) = await a.metadata.writeLocked("race", held, [tagCurrent])
            self.assertTrue(ok)
            self.assertEqual(slipped, [True])
            await held.release()
            self.assertEqual(sorted(self.s3Tags("race")), ["current", "late", "v1"])
            self.assertEqual(await a.listTags("race"), ["current", "late", "v1"])

        return ensureDeferred(run())
