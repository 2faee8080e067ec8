"""
Tests for L{zotwist.storage.s3.blobs} and L{zotwist.storage.s3.uploads}:
blobs and upload sessions on the real Ceph RGW and redis-server of
L{tests.clustersupport}.

Every test runs two or three I{instances}: each its own thread pools,
boto3 client, Redis client and L{S3Blobs}, sharing only the bucket and
Redis, as separate zotwist processes do.  Most tests speak HTTP to the real
web layer (L{zotwist.web.site.RegistrySite}) over loopback, so the writers
are driven exactly as in production; chunked uploads send each PATCH to
another instance.
"""

import hashlib
import json
import os
import threading
import uuid

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.apihelpers import assertError
from tests.clustersupport import cephS3, newBucket, redisServer
from tests.procsupport import (
    OCTET_STREAM,
    expect,
    finishUpload,
    header,
    patchChunk,
    request,
    startUpload,
    withQuery,
)
from zotwist.coordination.client import RedisClient, storePrefix
from zotwist.storage.s3 import uploads as uploadsModule
from zotwist.storage.s3.blobs import DRAIN_LIMIT, READ_AHEAD_LIMIT, S3Blobs
from zotwist.storage.s3.objects import ObjectStore
from zotwist.threads import ThreadPoolRunner
from zotwist.web.site import RegistrySite

MiB = 1024 * 1024
ROOT = "zot"
REPO = "s3/test"

#: The IRegistryStore methods S3Blobs implements (S3Store adds the rest).
_BLOB_METHODS = frozenset(
    {
        "statBlob",
        "openBlob",
        "deleteBlob",
        "mountBlob",
        "startUpload",
        "uploadStatus",
        "cancelUpload",
        "writerForSession",
        "writerForMonolithic",
        "completeUpload",
        "commitMonolithic",
    }
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobsOnlyStore:
    """
    A store with only the blob and upload half, enough for the blob and
    upload endpoints of the web layer.
    """

    def __init__(self, blobs: S3Blobs):
        self.blobs = blobs

    def __getattr__(self, name):
        if name in _BLOB_METHODS:
            return getattr(self.blobs, name)
        raise AttributeError(name)


class Instance:
    """
    One simulated zotwist instance: its own pools and clients, and an HTTP
    port serving the blob endpoints.

    @ivar url: C{http://127.0.0.1:PORT}.
    @ivar client: a treq client (no persistent connections).
    """

    def __init__(self, testCase, bucket: str):
        endpoint = cephS3()
        self.runner = ThreadPoolRunner(reactor, name="s3-test")
        self.uploadRunner = ThreadPoolRunner(reactor, name="s3-upload-test")
        self.partRunner = ThreadPoolRunner(reactor, name="s3-part-test")
        for runner in (self.runner, self.uploadRunner, self.partRunner):
            runner.startService()
            testCase.addCleanup(runner.stopService)
        self.objects = ObjectStore(
            self.runner,
            endpoint.url,
            bucket,
            endpoint.accessKey,
            endpoint.secretKey,
            endpoint.region,
            secure=False,
            forcepathstyle=True,
        )
        self.redis = RedisClient(redisServer().url, self.runner, storePrefix(bucket, ROOT))
        testCase.addCleanup(self.redis.close)
        self.blobs = S3Blobs(
            self.objects,
            self.redis,
            "/" + ROOT,
            uploadRunner=self.uploadRunner,
            partRunner=self.partRunner,
        )
        # Runs before the Redis client closes: a writer saves its session
        # and lets go of its lock after its response was sent.
        testCase.addCleanup(self.blobs.engine.settled)
        self.site = RegistrySite(BlobsOnlyStore(self.blobs))
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        testCase.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = HTTPClient(Agent(reactor, pool=pool))


class S3BlobsTestCase(TestCase):
    """
    Three instances on a fresh bucket; helpers to look at the bucket and
    Redis directly.
    """

    timeout = 300

    def setUp(self):
        self.endpoint = cephS3()
        self.bucket = newBucket(self.endpoint)
        self.s3 = self.endpoint.client()
        self.a, self.b, self.c = (Instance(self, self.bucket) for _ in range(3))
        self.r = redisServer().client()
        self.addCleanup(self.r.close)
        self.prefix = storePrefix(self.bucket, ROOT)

    def keys(self, prefix: str = ROOT + "/") -> list[str]:
        """
        Every object key under C{prefix}, sorted (blocking; small listings).
        """
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            found += [item["Key"] for item in page.get("Contents", [])]
        return sorted(found)

    def blobKeys(self) -> list[str]:
        return [k for k in self.keys() if "/blobs/" in k]

    def multipartUploads(self) -> list[str]:
        return [
            u["Key"] for u in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        ]

    def objectBytes(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def layoutKey(self, repo: str, digest: str) -> str:
        algorithm, encoded = digest.split(":")
        return f"{ROOT}/{repo}/blobs/{algorithm}/{encoded}"

    def assertPublished(self, repo: str, data: bytes, digest: str | None = None) -> None:
        """
        The blob is in the bucket under its layout key with exactly C{data},
        recorded in Redis (blobs, holders, catalog), and no upload
        temporaries are left.
        """
        digest = digest or sha256(data)
        key = self.layoutKey(repo, digest)
        stored = self.objectBytes(key)
        self.assertEqual(len(stored), len(data))
        self.assertTrue(stored == data, "the stored bytes differ")
        self.assertEqual(
            self.r.hget(self.prefix + f"blobs:{repo}", digest), str(len(data)).encode()
        )
        self.assertIn(repo.encode(), self.r.smembers(self.prefix + f"holders:{digest}"))
        self.assertIn(repo.encode(), self.r.smembers(self.prefix + "repos"))
        self.assertEqual([k for k in self.keys() if "/.uploads/" in k], [])
        self.assertEqual(self.multipartUploads(), [])
        self.assertEqual(
            sorted(k for k in self.keys(f"{ROOT}/{repo}/") if "/blobs/" not in k),
            [f"{ROOT}/{repo}/index.json", f"{ROOT}/{repo}/oci-layout"],
        )

    async def pull(self, instance, repo: str, digest: str, headers=None):
        response = await request(
            instance, "GET", f"{instance.url}/v2/{repo}/blobs/{digest}", headers=headers or {}
        )
        return response, await response.content()

    def session(self, uploadID: str) -> dict:
        return self.r.hgetall(self.prefix + f"upload:{uploadID}")


class MonolithicTests(S3BlobsTestCase):
    """
    Single-request uploads (POST C{?digest=}) and POST-then-PUT.
    """

    async def _post(self, instance, repo: str, data: bytes, digest: str):
        response = await request(
            instance,
            "POST",
            withQuery(f"{instance.url}/v2/{repo}/blobs/uploads/", digest=digest),
            data=data,
            headers={"Content-Type": OCTET_STREAM},
        )
        return response

    async def test_smallSinglePost(self):
        """
        A blob smaller than a part is verified and stored with one PUT under
        its layout key; another instance serves it.
        """
        data = os.urandom(100_000)
        response = await self._post(self.a, REPO, data, sha256(data))
        await expect(response, 201, "single POST")
        self.assertEqual(header(response, "Docker-Content-Digest"), sha256(data))
        self.assertPublished(REPO, data)
        response, body = await self.pull(self.b, REPO, sha256(data))
        self.assertEqual(response.code, 200)
        self.assertTrue(body == data)

    async def test_largeSinglePost(self):
        """
        A 21 MiB blob goes through a multipart upload and a server-side copy;
        byte for byte the same under the layout key, pulled whole from
        another instance.
        """
        data = os.urandom(21 * MiB + 5)
        response = await self._post(self.a, REPO, data, sha256(data))
        await expect(response, 201, "single POST")
        self.assertPublished(REPO, data)
        response, body = await self.pull(self.c, REPO, sha256(data))
        self.assertEqual(response.code, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(data).hexdigest())

    async def test_singlePostWrongDigest(self):
        """
        A body that does not match its digest is refused with
        C{DIGEST_INVALID}; nothing appears under C{blobs/}, and its parts are
        discarded.
        """
        for size in (1000, 9 * MiB):
            data = os.urandom(size)
            wrong = sha256(data + b"x")
            response = await self._post(self.a, REPO, data, wrong)
            await assertError(response, 400, "DIGEST_INVALID")
            self.assertEqual(self.blobKeys(), [])
            self.assertEqual(self.r.hget(self.prefix + f"blobs:{REPO}", wrong), None)
            await waitFor(lambda: not self.multipartUploads() and not self.keys())
            self.assertEqual(self.multipartUploads(), [])

    async def test_postThenPut(self):
        """
        POST on one instance, the whole body in the closing PUT on another.
        """
        data = os.urandom(9 * MiB + 1)
        location = await startUpload(self.a, REPO)
        location = location.replace(self.a.url, self.b.url)
        response = await finishUploadWith(self.b, location, sha256(data), data)
        await expect(response, 201, "PUT")
        self.assertPublished(REPO, data)

    async def test_rePushIsIdempotent(self):
        """
        Pushing a blob the repository holds again answers 201 and leaves the
        same single object.
        """
        data = os.urandom(50_000)
        for instance in (self.a, self.b):
            response = await self._post(instance, REPO, data, sha256(data))
            await expect(response, 201, "single POST")
        self.assertPublished(REPO, data)
        self.assertEqual(self.blobKeys(), [self.layoutKey(REPO, sha256(data))])


async def finishUploadWith(instance, location: str, digest: str, data: bytes):
    """
    The closing PUT of a session, carrying C{data}.
    """
    response = await request(
        instance,
        "PUT",
        withQuery(location, digest=digest),
        data=data,
        headers={"Content-Type": OCTET_STREAM},
    )
    await response.content()
    return response


def sleep(seconds: float) -> Deferred:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds)


async def waitFor(predicate, timeout: float = 10.0) -> None:
    """
    Wait (without blocking the reactor) until C{predicate()} holds; the
    clean-ups after a request end run just after its response.
    """
    from tests.procsupport import waitUntil

    await waitUntil(predicate, timeout, "condition not reached", interval=0.05)


class ChunkedTests(S3BlobsTestCase):
    """
    Chunked uploads whose PATCHes land on different instances.
    """

    async def _chunked(self, sizes, instances, closing):
        """
        Upload random content in chunks of C{sizes}, chunk I{i} sent to
        C{instances[i]}, closed with an empty PUT on C{closing}.

        @return: the content.
        """
        data = os.urandom(sum(sizes))
        location = await startUpload(instances[-1], REPO)
        offset = 0
        for size, instance in zip(sizes, instances):
            location = location.replace(self.a.url, instance.url)
            location = location.replace(self.b.url, instance.url)
            location = location.replace(self.c.url, instance.url)
            chunk = data[offset : offset + size]
            location = await patchChunk(instance, location, chunk, offset, size)
            offset += size
        for other in (self.a, self.b, self.c):
            location = location.replace(other.url, closing.url)
        response = await finishUpload(closing, location, sha256(data))
        await expect(response, 201, "closing PUT")
        return data

    async def test_smallChunks(self):
        """
        Chunks smaller than a part, each on another instance, accumulate in
        the session's tail in Redis and are stored with one PUT.
        """
        data = await self._chunked([MiB, 2 * MiB, 100], [self.a, self.b, self.c], self.a)
        self.assertPublished(REPO, data)

    async def test_largeChunks(self):
        """
        Chunks of 3 MiB, 7 MiB and 1 byte on three instances: after the
        second the session has sent one 8 MiB part and keeps 2 MiB of tail
        in Redis; the result is byte for byte the content.
        """
        data = os.urandom(10 * MiB + 1)
        location = await startUpload(self.a, REPO)
        uploadID = location.rstrip("/").rsplit("/", 1)[1]
        location = await patchChunk(self.a, location, data[: 3 * MiB], 0, 3 * MiB)
        state = self.session(uploadID)
        self.assertEqual(int(state[b"offset"]), 3 * MiB)
        self.assertEqual(json.loads(state[b"parts"]), [])
        self.assertEqual(len(state[b"tail"]), 3 * MiB)
        location = location.replace(self.a.url, self.b.url)
        location = await patchChunk(self.b, location, data[3 * MiB : 10 * MiB], 3 * MiB, 7 * MiB)
        state = self.session(uploadID)
        self.assertEqual(int(state[b"offset"]), 10 * MiB)
        self.assertEqual([p[0] for p in json.loads(state[b"parts"])], [1])
        self.assertEqual([p[2] for p in json.loads(state[b"parts"])], [8 * MiB])
        self.assertEqual(len(state[b"tail"]), 2 * MiB)
        self.assertEqual(self.multipartUploads(), [f"{ROOT}/.uploads/{uploadID}/data"])
        location = location.replace(self.b.url, self.c.url)
        location = await patchChunk(self.c, location, data[10 * MiB :], 10 * MiB, 1)
        location = location.replace(self.c.url, self.a.url)
        response = await finishUpload(self.a, location, sha256(data))
        await expect(response, 201, "closing PUT")
        self.assertPublished(REPO, data)
        self.assertEqual(self.session(uploadID), {})

    async def test_manyParts(self):
        """
        A 26 MiB upload in 5 MiB chunks alternating between instances,
        closed by a PUT carrying the last bytes: several parts, verified
        byte for byte through boto3 under the layout key.
        """
        data = os.urandom(26 * MiB + 333)
        location = await startUpload(self.b, REPO)
        offset, turn = 0, 0
        instances = (self.a, self.b, self.c)
        while len(data) - offset > 5 * MiB:
            instance = instances[turn % 3]
            for other in instances:
                location = location.replace(other.url, instance.url)
            location = await patchChunk(
                instance, location, data[offset : offset + 5 * MiB], offset, 5 * MiB
            )
            offset += 5 * MiB
            turn += 1
        for other in instances:
            location = location.replace(other.url, self.c.url)
        response = await request(
            self.c,
            "PUT",
            withQuery(location, digest=sha256(data)),
            data=data[offset:],
            headers={
                "Content-Type": OCTET_STREAM,
                "Content-Range": f"{offset}-{len(data) - 1}",
            },
        )
        await expect(response, 201, "closing PUT with the last chunk")
        self.assertPublished(REPO, data)

    async def test_wrongDigest(self):
        """
        A closing PUT with the wrong digest answers C{DIGEST_INVALID};
        nothing appears under C{blobs/}, the session keeps its content
        (status unchanged), and the right digest then completes it.
        """
        data = os.urandom(9 * MiB)
        location = await startUpload(self.a, REPO)
        location = await patchChunk(self.a, location, data, 0, len(data))
        location = location.replace(self.a.url, self.b.url)
        response = await request(
            self.b, "PUT", withQuery(location, digest=sha256(b"other")),
            headers={"Content-Type": OCTET_STREAM},
        )
        await assertError(response, 400, "DIGEST_INVALID")
        self.assertEqual(self.blobKeys(), [])
        response = await request(self.c, "GET", location.replace(self.b.url, self.c.url))
        await expect(response, 204, "status")
        self.assertEqual(header(response, "Range"), f"0-{len(data) - 1}")
        response = await finishUpload(self.b, location, sha256(data))
        await expect(response, 201, "closing PUT")
        self.assertPublished(REPO, data)

    async def test_contentRangeMismatch(self):
        """
        A PATCH whose Content-Range does not continue the session answers 416
        with the session's Range; its bytes are not added.
        """
        data = os.urandom(1000)
        location = await startUpload(self.a, REPO)
        location = await patchChunk(self.a, location, data[:600], 0, 600)
        for start in (0, 601, 599):
            other = location.replace(self.a.url, self.b.url)
            response = await request(
                self.b, "PATCH", other, data=data[600:],
                headers={
                    "Content-Type": OCTET_STREAM,
                    "Content-Range": f"{start}-{start + 399}",
                },
            )
            await assertError(response, 416, "BLOB_UPLOAD_INVALID")
            self.assertEqual(header(response, "Range"), "0-599")
        location = location.replace(self.a.url, self.c.url)
        location = await patchChunk(self.c, location, data[600:], 600, 400)
        response = await finishUpload(self.c, location, sha256(data))
        await expect(response, 201, "closing PUT")
        self.assertPublished(REPO, data)

    async def test_statusAndCancel(self):
        """
        Any instance reports a session's progress; a cancel on another ends
        it everywhere and aborts its multipart upload.
        """
        data = os.urandom(9 * MiB)
        location = await startUpload(self.a, REPO)
        response = await request(self.b, "GET", location.replace(self.a.url, self.b.url))
        await expect(response, 204, "status")
        self.assertEqual(header(response, "Range"), "0-0")
        location = await patchChunk(self.a, location, data, 0, len(data))
        response = await request(self.c, "GET", location.replace(self.a.url, self.c.url))
        await expect(response, 204, "status")
        self.assertEqual(header(response, "Range"), f"0-{len(data) - 1}")
        self.assertEqual(len(self.multipartUploads()), 1)
        response = await request(self.b, "DELETE", location.replace(self.a.url, self.b.url))
        await expect(response, 204, "cancel")
        self.assertEqual(self.multipartUploads(), [])
        for instance in (self.a, self.c):
            response = await request(instance, "GET", location.replace(self.a.url, instance.url))
            await assertError(response, 404, "BLOB_UPLOAD_UNKNOWN")
        response = await request(
            self.c, "PATCH", location.replace(self.a.url, self.c.url), data=b"x",
            headers={"Content-Type": OCTET_STREAM, "Content-Range": f"{len(data)}-{len(data)}"},
        )
        await assertError(response, 404, "BLOB_UPLOAD_UNKNOWN")

    async def test_unknownSessions(self):
        """
        Unknown, malformed and other repositories' session ids are
        C{BLOB_UPLOAD_UNKNOWN} (404) for PATCH, PUT, GET and DELETE.
        """
        location = await startUpload(self.a, "other/repo")
        uploadID = location.rstrip("/").rsplit("/", 1)[1]
        for identifier in (uuid.uuid4().hex, "not-an-id", uploadID):
            url = f"{self.b.url}/v2/{REPO}/blobs/uploads/{identifier}"
            for method, kwargs in (
                ("PATCH", {"data": b"abc", "headers": {"Content-Type": OCTET_STREAM}}),
                ("PUT", {"data": b"abc", "headers": {"Content-Type": OCTET_STREAM}}),
                ("GET", {}),
                ("DELETE", {}),
            ):
                target = withQuery(url, digest=sha256(b"abc")) if method == "PUT" else url
                response = await request(self.b, method, target, **kwargs)
                await assertError(response, 404, "BLOB_UPLOAD_UNKNOWN")
        self.assertEqual(self.blobKeys(), [])

    async def test_sessionBusy(self):
        """
        While one request holds a session, a request on another instance
        waits for it, and gives up with 416 if it is never let go.
        """
        self.patch(uploadsModule, "LOCK_WAIT", 0.5)
        location = await startUpload(self.a, REPO)
        uploadID = location.rstrip("/").rsplit("/", 1)[1]
        engine = self.a.blobs.engine
        token = await self.a.redis.run(engine.acquire, uploadID)
        self.assertIsNotNone(token)
        response = await request(
            self.b, "PATCH", location.replace(self.a.url, self.b.url), data=b"abc",
            headers={"Content-Type": OCTET_STREAM, "Content-Range": "0-2"},
        )
        await assertError(response, 416, "BLOB_UPLOAD_INVALID")
        self.assertEqual(int(self.session(uploadID)[b"offset"]), 0)
        await self.a.redis.run(engine.release, uploadID, token)
        await patchChunk(self.b, location.replace(self.a.url, self.b.url), b"abc", 0, 3)

    async def test_concurrentPatches(self):
        """
        Two PATCHes claiming the same range of one session, sent at once to
        two instances: the session lock orders them, so one is appended
        (202) and the other, finding the session moved on, is refused (416);
        the upload completes with the accepted chunk's bytes only.
        """
        from twisted.internet.defer import gatherResults

        first, second = os.urandom(6 * MiB), os.urandom(6 * MiB)
        location = await startUpload(self.a, REPO)

        async def send(instance, data):
            response = await request(
                instance, "PATCH", location.replace(self.a.url, instance.url), data=data,
                headers={"Content-Type": OCTET_STREAM, "Content-Range": f"0-{len(data) - 1}"},
            )
            await response.content()
            return response.code

        codes = await gatherResults(
            [
                Deferred.fromCoroutine(send(self.b, first)),
                Deferred.fromCoroutine(send(self.c, second)),
            ]
        )
        self.assertEqual(sorted(codes), [202, 416])
        accepted = first if codes[0] == 202 else second
        response = await finishUpload(self.a, location, sha256(accepted))
        await expect(response, 201, "closing PUT")
        self.assertPublished(REPO, accepted)

    async def test_completeWithoutWriter(self):
        """
        L{S3Blobs.completeUpload} without a closing request's writer (the
        store's own callers) locks and loads the session itself; a wrong
        digest leaves it as it was.
        """
        from zotwist.errors import RegistryError

        data = os.urandom(9 * MiB + 10)
        location = await startUpload(self.a, REPO)
        uploadID = location.rstrip("/").rsplit("/", 1)[1]
        await patchChunk(self.a, location, data, 0, len(data))
        with self.assertRaises(RegistryError) as caught:
            await self.b.blobs.completeUpload(REPO, uploadID, sha256(b"no"), None)
        self.assertEqual(caught.exception.code, "DIGEST_INVALID")
        self.assertEqual(await self.c.blobs.uploadStatus(REPO, uploadID), len(data))
        self.assertIsNone(self.r.get(self.b.blobs.engine.lockKey(uploadID)))
        size = await self.b.blobs.completeUpload(REPO, uploadID, sha256(data), None)
        self.assertEqual(size, len(data))
        self.assertPublished(REPO, data)
        with self.assertRaises(RegistryError) as caught:
            await self.b.blobs.completeUpload(REPO, uploadID, sha256(data), None)
        self.assertEqual(caught.exception.code, "BLOB_UPLOAD_UNKNOWN")

    async def test_sessionExpiry(self):
        """
        A session's Redis record expires a day and an hour (by default)
        after its last change, and each change renews it.
        """
        location = await startUpload(self.a, REPO)
        uploadID = location.rstrip("/").rsplit("/", 1)[1]
        key = self.prefix + f"upload:{uploadID}"
        ttl = uploadsModule.DEFAULT_SESSION_TTL
        self.assertTrue(ttl - 60 < self.r.ttl(key) <= ttl)
        self.r.expire(key, 100)
        await patchChunk(self.b, location.replace(self.a.url, self.b.url), b"abc", 0, 3)
        self.assertTrue(ttl - 60 < self.r.ttl(key) <= ttl)

    async def test_deadInstanceLockExpires(self):
        """
        A session lock left by an instance that died (never refreshed,
        never released) expires, and a PATCH on another instance that was
        waiting for it then goes through.
        """
        self.patch(uploadsModule, "LOCK_TTL_MS", 1000)
        location = await startUpload(self.a, REPO)
        uploadID = location.rstrip("/").rsplit("/", 1)[1]
        dead = await self.a.redis.run(self.a.blobs.engine.acquire, uploadID)
        self.assertIsNotNone(dead)
        location = await patchChunk(self.b, location.replace(self.a.url, self.b.url), b"abc", 0, 3)
        self.assertEqual(int(self.session(uploadID)[b"offset"]), 3)

    async def test_longRequestKeepsItsLock(self):
        """
        A request that holds a session longer than the lock's lifetime keeps
        it (its keeper refreshes it), and lets go when it ends.
        """
        from tests.procsupport import waitUntil

        self.patch(uploadsModule, "LOCK_TTL_MS", 600)
        self.patch(uploadsModule, "LOCK_REFRESH", 0.15)
        blobs = self.a.blobs
        uploadID = await blobs.startUpload(REPO, "sha256")
        writer = blobs.writerForSession(REPO, uploadID, 0, None)
        writer.write(b"abc")
        await writer.flushed()
        lockKey = blobs.engine.lockKey(uploadID)
        for _ in range(3):
            await sleep(0.5)
            self.assertEqual(self.r.get(lockKey), writer.token.encode())
        writer.write(b"def")
        await writer.flushed()
        writer.close()
        await waitUntil(lambda: self.r.get(lockKey) is None, 5, "the lock was not released")
        self.assertEqual(await blobs.uploadStatus(REPO, uploadID), 6)
        await sleep(0.5)
        self.assertIsNone(self.r.get(lockKey))

    async def test_lostLockSavesNothing(self):
        """
        A writer whose lock was taken over (it expired while the instance
        stalled) cannot save over the new holder's progress.
        """
        from zotwist.errors import RegistryError

        blobs = self.a.blobs
        uploadID = await blobs.startUpload(REPO, "sha256")
        writer = blobs.writerForSession(REPO, uploadID, 0, 3)
        writer.write(b"abc")
        await writer.flushed()
        self.assertEqual(await blobs.uploadStatus(REPO, uploadID), 3)
        writer.write(b"def")
        # The lock expires and another request takes the session.
        await self.a.redis.run(lambda r: r.delete(blobs.engine.lockKey(uploadID)))
        other = await self.b.redis.run(self.b.blobs.engine.acquire, uploadID)
        with self.assertRaises(RegistryError) as caught:
            await writer.flushed()
        self.assertEqual(caught.exception.status, 409)
        writer.close()
        await self.b.redis.run(self.b.blobs.engine.release, uploadID, other)
        self.assertEqual(await blobs.uploadStatus(REPO, uploadID), 3)


class BlobTests(S3BlobsTestCase):
    """
    Reading, stating, deleting and mounting blobs.
    """

    async def _push(self, instance, repo: str, data: bytes) -> str:
        response = await request(
            instance,
            "POST",
            withQuery(f"{instance.url}/v2/{repo}/blobs/uploads/", digest=sha256(data)),
            data=data,
            headers={"Content-Type": OCTET_STREAM},
        )
        await expect(response, 201, "single POST")
        return sha256(data)

    async def test_rangedReads(self):
        """
        Range requests to another instance return exactly the bytes asked
        for, across the 1 MiB read size, and suffix ranges; an unsatisfiable
        range is 416.
        """
        data = os.urandom(3 * MiB + 100)
        digest = await self._push(self.a, REPO, data)
        for spec, (start, end) in (
            ("0-0", (0, 0)),
            ("10-20", (10, 20)),
            (f"{MiB - 5}-{2 * MiB + 5}", (MiB - 5, 2 * MiB + 5)),
            (f"{3 * MiB}-", (3 * MiB, len(data) - 1)),
            ("-50", (len(data) - 50, len(data) - 1)),
        ):
            response, body = await self.pull(self.b, REPO, digest, {"Range": f"bytes={spec}"})
            self.assertEqual(response.code, 206, spec)
            self.assertEqual(header(response, "Content-Range"), f"bytes {start}-{end}/{len(data)}")
            self.assertTrue(body == data[start : end + 1], spec)
        response, _ = await self.pull(self.b, REPO, digest, {"Range": f"bytes={len(data)}-"})
        self.assertEqual(response.code, 416)

    async def test_readerSeeksAndOffReactor(self):
        """
        The reader continues one GET for sequential reads, opens another for
        a jump, reads off the reactor thread, and has no C{fileno} (so the
        web layer never tries C{sendfile} on it).
        """
        data = os.urandom(2 * MiB + 7)
        digest = await self._push(self.a, REPO, data)
        reader = await self.b.blobs.openBlob(REPO, digest)
        self.assertEqual(reader.size, len(data))
        self.assertFalse(hasattr(reader, "fileno"))
        opened, threads = [], []
        original = self.b.objects.blocking.openStream

        def recording(key, start, end=None):
            opened.append((start, end))
            threads.append(threading.current_thread() is threading.main_thread())
            return original(key, start, end)

        self.patch(self.b.objects.blocking, "openStream", recording)
        self.assertEqual(await reader.read(0, MiB), data[:MiB])
        self.assertEqual(await reader.read(MiB, MiB), data[MiB : 2 * MiB])
        self.assertEqual(await reader.read(100, 10), data[100:110])
        self.assertEqual(await reader.read(110, 5), data[110:115])
        self.assertEqual(await reader.read(2 * MiB, MiB), data[2 * MiB :])
        self.assertEqual(await reader.read(len(data), 10), b"")
        reader.close()
        # 0: the first read; 1 MiB: sequential, read ahead to the end; 100:
        # a seek, just the 10 bytes asked for; 110: the next small read, a
        # GET of its own; 2 MiB: a seek.
        self.assertEqual(
            opened,
            [(0, MiB - 1), (MiB, None), (100, 109), (110, 114), (2 * MiB, 2 * MiB + 6)],
        )
        self.assertEqual(threads, [False] * 5)

    async def test_statFromRedisOnly(self):
        """
        What Redis says decides: an object in the bucket that Redis does not
        record is absent (HEAD 404, stat None), and stat makes no S3 call.
        """
        data = b"only in s3"
        digest = sha256(data)
        self.s3.put_object(Bucket=self.bucket, Key=self.layoutKey(REPO, digest), Body=data)
        self.assertIsNone(await self.a.blobs.statBlob(REPO, digest))
        response = await request(self.a, "HEAD", f"{self.a.url}/v2/{REPO}/blobs/{digest}")
        await expect(response, 404, "HEAD")
        calls = []
        self.patch(self.a.objects.blocking, "head", lambda *a: calls.append(a))
        self.patch(self.a.objects.blocking, "openStream", lambda *a: calls.append(a))
        digest2 = await self._push(self.b, REPO, b"pushed")
        self.assertEqual(await self.a.blobs.statBlob(REPO, digest2), 6)
        response = await request(self.a, "HEAD", f"{self.a.url}/v2/{REPO}/blobs/{digest2}")
        await expect(response, 200, "HEAD")
        self.assertEqual(header(response, "Content-Length"), "6")
        self.assertEqual(calls, [])

    async def test_delete(self):
        """
        DELETE removes the Redis records, then the object; then the blob is
        unknown everywhere, and a second DELETE is C{BLOB_UNKNOWN}.
        """
        data = os.urandom(1000)
        digest = await self._push(self.a, REPO, data)
        response = await request(self.b, "DELETE", f"{self.b.url}/v2/{REPO}/blobs/{digest}")
        await expect(response, 202, "DELETE")
        self.assertEqual(self.blobKeys(), [])
        self.assertIsNone(await self.c.blobs.statBlob(REPO, digest))
        self.assertEqual(self.r.smembers(self.prefix + f"holders:{digest}"), set())
        response, _ = await self.pull(self.c, REPO, digest)
        await assertError(response, 404, "BLOB_UNKNOWN")
        response = await request(self.a, "DELETE", f"{self.a.url}/v2/{REPO}/blobs/{digest}")
        await assertError(response, 404, "BLOB_UNKNOWN")

    async def test_mount(self):
        """
        A mount copies the blob on the server into the target's own layout
        (with or without C{from=}), and records both holders; the copy stays
        when the source's is deleted.
        """
        data = os.urandom(9 * MiB)
        digest = await self._push(self.a, "mount/source", data)
        response = await request(
            self.b, "POST",
            f"{self.b.url}/v2/mount/target/blobs/uploads/?mount={digest}&from=mount/source",
        )
        await expect(response, 201, "mount")
        self.assertEqual(header(response, "Location"), f"/v2/mount/target/blobs/{digest}")
        self.assertPublished("mount/target", data)
        self.assertEqual(
            self.r.smembers(self.prefix + f"holders:{digest}"),
            {b"mount/source", b"mount/target"},
        )
        # Without from=: any holder the caller may read.
        self.assertEqual(await self.c.blobs.mountBlob("mount/third", digest, None, None), len(data))
        self.assertPublished("mount/third", data)
        response = await request(
            self.a, "DELETE", f"{self.a.url}/v2/mount/source/blobs/{digest}"
        )
        await expect(response, 202, "DELETE")
        response, body = await self.pull(self.c, "mount/target", digest)
        self.assertEqual(response.code, 200)
        self.assertTrue(body == data)

    async def test_mountRespectsReadAndMissing(self):
        """
        A mount finds nothing when the caller may not read any holder, when
        nobody holds the digest, or when C{from} does not hold it; the web
        layer then opens an upload session (202).
        """
        data = b"guarded"
        digest = await self._push(self.a, "private/repo", data)
        self.assertIsNone(
            await self.b.blobs.mountBlob("x/target", digest, None, lambda repo: False)
        )
        self.assertIsNone(await self.b.blobs.mountBlob("x/target", digest, "x/nothere", None))
        self.assertIsNone(await self.b.blobs.mountBlob("x/target", sha256(b"never"), None, None))
        response = await request(
            self.b, "POST", f"{self.b.url}/v2/x/target/blobs/uploads/?mount={sha256(b'never')}"
        )
        await expect(response, 202, "mount of an unknown blob")
        self.assertEqual(self.blobKeys(), [self.layoutKey("private/repo", digest)])

    async def test_blobURL(self):
        """
        The presigned URL of a held blob fetches it without credentials; an
        absent blob has none.
        """
        from zotwist.errors import RegistryError

        data = b"redirect me"
        digest = await self._push(self.a, REPO, data)
        url = await self.b.blobs.blobURL(REPO, digest)
        self.assertIn(self.layoutKey(REPO, digest).split("/", 1)[1], url)

        def fetch():
            import urllib.request

            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read()

        self.assertEqual(await self.b.runner.run(fetch), data)
        with self.assertRaises(RegistryError) as caught:
            await self.b.blobs.blobURL(REPO, sha256(b"absent"))
        self.assertEqual(caught.exception.code, "BLOB_UNKNOWN")

    async def test_layoutOncePerRepository(self):
        """
        The first blob of a new repository writes its layout files
        (conditionally); an instance publishing a blob in a repository
        Redis already lists makes no layout PUT at all.
        """
        puts = {}
        for name, instance in (("a", self.a), ("b", self.b)):
            original = instance.objects.blocking.put

            def recording(key, data, ifNoneMatch=False, ifMatch=None, name=name, orig=original):
                last = key.rsplit("/", 1)[1]
                if last in ("oci-layout", "index.json"):
                    puts.setdefault(name, []).append((last, ifNoneMatch))
                return orig(key, data, ifNoneMatch, ifMatch)

            self.patch(instance.objects.blocking, "put", recording)
        data = b"first"
        await self._push(self.a, REPO, data)
        self.assertEqual(puts["a"], [("oci-layout", True), ("index.json", True)])
        second = os.urandom(1000)
        await self._push(self.b, REPO, second)
        self.assertEqual(puts.get("b", []), [])
        self.assertPublished(REPO, data)
        self.assertPublished(REPO, second)
        # A repository new to both: b lays it out.
        await self._push(self.b, "s3/other", data)
        self.assertEqual(puts["b"], [("oci-layout", True), ("index.json", True)])
        self.assertPublished("s3/other", data)

    async def test_rebuildLaysOut(self):
        """
        A repository whose blob object is all there is (a crash after the
        copy, before the layout) gets its layout files from the rebuild
        that adds it to C{repos}, since a listed repository's layout is
        never written again.
        """
        data = b"orphan"
        key = self.layoutKey("s3/orphan", sha256(data))
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        listing = await self.b.objects.list(f"{ROOT}/s3/orphan/blobs/")
        self.assertEqual(await self.b.blobs.rebuildBlobs("s3/orphan", listing.objects), 1)
        self.assertIn(b"s3/orphan", self.r.smembers(self.prefix + "repos"))
        self.assertEqual(
            self.keys(f"{ROOT}/s3/orphan/"),
            sorted([key, f"{ROOT}/s3/orphan/index.json", f"{ROOT}/s3/orphan/oci-layout"]),
        )
        self.assertEqual(
            json.loads(self.objectBytes(f"{ROOT}/s3/orphan/index.json"))["manifests"], []
        )

    async def test_rebuildBlobs(self):
        """
        After Redis lost the records, L{S3Blobs.rebuildBlobs} restores them
        from a listing of the repository's C{blobs/} keys.
        """
        first = await self._push(self.a, REPO, b"one")
        second = await self._push(self.a, REPO, os.urandom(2000))
        self.s3.put_object(
            Bucket=self.bucket, Key=f"{ROOT}/{REPO}/blobs/sha256/not-a-digest", Body=b"x"
        )
        for key in self.r.scan_iter(self.prefix.replace("{", "\\{").replace("}", "\\}") + "*"):
            self.r.delete(key)
        self.assertIsNone(await self.b.blobs.statBlob(REPO, first))
        listing = await self.b.objects.list(f"{ROOT}/{REPO}/blobs/")
        self.assertEqual(await self.b.blobs.rebuildBlobs(REPO, listing.objects), 2)
        self.assertEqual(await self.b.blobs.statBlob(REPO, first), 3)
        self.assertEqual(await self.b.blobs.statBlob(REPO, second), 2000)
        self.assertEqual(self.r.smembers(self.prefix + "repos"), {REPO.encode()})
        self.assertEqual(self.r.smembers(self.prefix + f"holders:{first}"), {REPO.encode()})


class ReaderTests(S3BlobsTestCase):
    """
    L{S3BlobReader}'s read-ahead, driven as the web layer's producer drives
    it: positional reads of up to 1 MiB.
    """

    async def _blob(self, data: bytes):
        """
        Push C{data} through instance a; return a reader of it on instance
        b and the list its GETs are recorded in (C{(start, end)}, and the
        body streams in C{reader.streams}).
        """
        response = await request(
            self.a,
            "POST",
            withQuery(f"{self.a.url}/v2/{REPO}/blobs/uploads/", digest=sha256(data)),
            data=data,
            headers={"Content-Type": OCTET_STREAM},
        )
        await expect(response, 201, "single POST")
        opened, streams = [], []
        original = self.b.objects.blocking.openStream

        def recording(key, start, end=None):
            self.assertIsNot(threading.current_thread(), threading.main_thread())
            opened.append((start, end))
            stream = original(key, start, end)
            streams.append(stream)
            return stream

        self.patch(self.b.objects.blocking, "openStream", recording)
        reader = await self.b.blobs.openBlob(REPO, sha256(data))
        return reader, opened, streams

    async def settle(self, reader) -> None:
        """
        Wait until the reader's read-ahead stopped (no job in flight).
        """
        while reader.fetching is not None:
            await reader.fetching

    async def assertReleased(self, streams) -> None:
        """
        Every GET's body was closed, and the pool's threads all become idle
        (a worker counts as busy for a moment after its result was
        delivered; one blocked would fail the wait).
        """
        for stream in streams:
            self.assertTrue(stream._raw_stream.closed, stream)
        await waitFor(lambda: self.b.runner.pool.working == [])

    async def test_sequentialReadAhead(self):
        """
        Read sequentially in 1 MiB reads, a 21 MiB blob comes back exactly;
        once reads are sequential the reader reads ahead of them (bytes are
        buffered that were not asked for yet) but never more than
        L{READ_AHEAD_LIMIT}; two GETs, each read to its end: the first
        read's (it may be a whole range), then one to the end of the blob;
        closing at the end releases everything.
        """
        data = os.urandom(21 * MiB + 12345)
        reader, opened, streams = await self._blob(data)
        received, ahead = [], []
        offset = 0
        while offset < len(data):
            chunk = await reader.read(offset, min(MiB, len(data) - offset))
            self.assertTrue(chunk)
            received.append(chunk)
            offset += len(chunk)
            self.assertLessEqual(reader.buffered, READ_AHEAD_LIMIT)
            await self.settle(reader)
            self.assertLessEqual(reader.buffered, READ_AHEAD_LIMIT)
            ahead.append(reader.buffered)
        self.assertEqual(await reader.read(len(data), MiB), b"")
        self.assertTrue(b"".join(received) == data, "the bytes read differ")
        # Nothing ahead after the first read (it may be a whole range),
        # then read-ahead.
        self.assertEqual(ahead[0], 0)
        self.assertGreater(max(ahead), MiB)
        self.assertEqual(opened, [(0, MiB - 1), (MiB, None)])
        for stream in streams:
            self.assertEqual(stream._amount_read, int(stream._content_length))
        await reader.close()
        await self.assertReleased(streams)

    async def test_pullThroughHTTP(self):
        """
        A 21 MiB blob pulled through the web layer from another instance
        arrives exactly, and whole and ranged.
        """
        data = os.urandom(21 * MiB + 7)
        reader, _, _ = await self._blob(data)
        await reader.close()
        response, body = await self.pull(self.c, REPO, sha256(data))
        self.assertEqual(response.code, 200)
        self.assertTrue(body == data, "the pulled bytes differ")
        start, end = 3 * MiB + 5, 12 * MiB + 77
        response, body = await self.pull(
            self.c, REPO, sha256(data), {"Range": f"bytes={start}-{end}"}
        )
        self.assertEqual(response.code, 206)
        self.assertTrue(body == data[start : end + 1], "the range differs")

    async def test_seeks(self):
        """
        A read backwards, or beyond what is buffered, drops the buffer and
        opens a GET of just what it asks for; a read inside the buffer is
        answered from it without a GET; sequential reads from a new
        position read ahead again.
        """
        data = os.urandom(24 * MiB)
        reader, opened, streams = await self._blob(data)
        for n in range(4):
            self.assertTrue(await reader.read(n * MiB, MiB) == data[n * MiB : (n + 1) * MiB])
        await self.settle(reader)
        self.assertGreater(reader.buffered, 0)
        before = len(opened)
        # Backwards.
        self.assertTrue(await reader.read(MiB + 3, MiB) == data[MiB + 3 : 2 * MiB + 3])
        self.assertEqual(opened[before:], [(MiB + 3, 2 * MiB + 2)])
        self.assertTrue(await reader.read(2 * MiB + 3, MiB) == data[2 * MiB + 3 : 3 * MiB + 3])
        await self.settle(reader)
        self.assertGreater(reader.buffered, 0)
        # Inside the buffer (skipping some of it): no GET.
        count = len(opened)
        offset = 3 * MiB + 3 + 1000
        self.assertTrue(await reader.read(offset, 10) == data[offset : offset + 10])
        self.assertEqual(len(opened), count)
        # Far ahead, beyond the buffer.
        far = 20 * MiB + 1
        self.assertTrue(await reader.read(far, MiB) == data[far : far + MiB])
        self.assertEqual(opened[-1], (far, far + MiB - 1))
        # And back to the start, then sequentially to the end.
        offset, received = 0, []
        while offset < len(data):
            chunk = await reader.read(offset, MiB)
            received.append(chunk)
            offset += len(chunk)
        self.assertTrue(b"".join(received) == data, "the bytes read differ")
        await reader.close()
        await self.assertReleased(streams)

    async def test_rangeOfOneRead(self):
        """
        A range the producer reads in one read (up to 1 MiB) is one GET of
        exactly that range, read to its end, with nothing read ahead.
        """
        data = os.urandom(10 * MiB)
        reader, opened, streams = await self._blob(data)
        self.assertTrue(await reader.read(5 * MiB + 1, MiB) == data[5 * MiB + 1 : 6 * MiB + 1])
        await self.settle(reader)
        self.assertEqual(reader.buffered, 0)
        self.assertEqual(opened, [(5 * MiB + 1, 6 * MiB)])
        self.assertEqual(streams[0]._amount_read, MiB)
        await reader.close()
        await self.assertReleased(streams)

    async def test_closeMidStream(self):
        """
        Closing while a read-ahead is in flight stops it: the GET is
        released once the job returns, no pool thread is left busy, a read
        waiting on the job fails, and later reads fail.
        """
        data = os.urandom(40 * MiB)
        reader, opened, streams = await self._blob(data)
        for n in range(3):
            await reader.read(n * MiB, MiB)
        self.assertIsNotNone(reader.fetching)
        waiting = reader.read(30 * MiB, MiB)
        await reader.close()
        self.assertEqual(reader.buffered, 0)
        await self.assertReleased(streams)
        with self.assertRaises(OSError):
            await waiting
        with self.assertRaises(OSError):
            await reader.read(3 * MiB, MiB)
        # Nothing was read past the window the job was in.
        self.assertLessEqual(sum(s._amount_read for s in streams), 3 * MiB + DRAIN_LIMIT)

    async def test_shorterObject(self):
        """
        An object shorter than the size Redis records ends the reads with
        C{b""} at its end (the producer then fails the download) instead
        of opening GETs forever.
        """
        data = os.urandom(3 * MiB)
        reader, opened, streams = await self._blob(data)
        reader.size = 5 * MiB
        offset, received = 0, []
        while True:
            chunk = await reader.read(offset, MiB)
            if not chunk:
                break
            received.append(chunk)
            offset += len(chunk)
        self.assertEqual(offset, len(data))
        self.assertTrue(b"".join(received) == data)
        self.assertLessEqual(len(opened), 4)
        await reader.close()
        await self.assertReleased(streams)


class BackpressureTests(S3BlobsTestCase):
    """
    Upload writers never hold a blob in memory.
    """

    async def test_pausesAndBoundedMemory(self):
        """
        Fed 40 MiB faster than it can send, a writer pauses its transport,
        resumes it, and never queues more than its high-water mark plus one
        write, nor holds more than one part of tail.
        """
        from zotwist.storage.writers import HIGH_WATER

        transport = _Transport()
        writer = self.a.blobs.writerForMonolithic(REPO, "sha256", None)
        writer.transport = transport
        piece = os.urandom(MiB)
        hasher = hashlib.sha256()
        worst = 0
        for _ in range(40):
            while transport.paused:
                d = Deferred()
                transport.waiters.append(d)
                await d
            writer.write(piece)
            hasher.update(piece)
            worst = max(worst, writer._pendingBytes)
        await writer.flushed()
        self.assertGreater(transport.pauses, 0)
        self.assertEqual(transport.pauses, transport.resumes)
        self.assertLessEqual(worst, HIGH_WATER + MiB)
        # Parts are sent while the next bytes are hashed: a bounded number
        # of parts in flight beside less than a part of tail.
        upload = writer.upload
        sending = sum(size for _, size, _ in upload.sending)
        self.assertLess(len(upload.tail) - sending, uploadsModule.PART_SIZE)
        self.assertLessEqual(len(upload.sending), uploadsModule.PARTS_IN_FLIGHT)
        self.assertEqual(len(upload.parts) + len(upload.sending), 5)
        digest = "sha256:" + hasher.hexdigest()
        self.assertEqual(await self.a.blobs.commitMonolithic(REPO, digest, writer), 40 * MiB)
        writer.close()
        self.assertEqual(
            self.s3.head_object(Bucket=self.bucket, Key=self.layoutKey(REPO, digest))[
                "ContentLength"
            ],
            40 * MiB,
        )


class PartFailureTests(S3BlobsTestCase):
    """
    A part S3 refuses leaves the upload's state consistent.
    """

    async def test_failedPartIsSentAgain(self):
        """
        When sending a part fails, the PATCH fails (500) but the session
        keeps what was received, its multipart upload and the parts S3 took;
        the client resumes from the offset the session reports, the part is
        sent again, and the upload completes with the right bytes and no
        multipart upload left behind.
        """
        data = os.urandom(20 * MiB)
        blocking = self.b.objects.blocking
        original = blocking.uploadPart
        failures = []

        def flaky(key, mpu, number, body):
            if number == 2 and not failures:
                failures.append(number)
                raise OSError("S3 went away")
            return original(key, mpu, number, body)

        self.patch(blocking, "uploadPart", flaky)
        location = await startUpload(self.a, REPO)
        uploadID = location.rstrip("/").rsplit("/", 1)[1]
        location = await patchChunk(self.a, location, data[: 4 * MiB], 0, 4 * MiB)
        response = await request(
            self.b, "PATCH", location.replace(self.a.url, self.b.url), data=data[4 * MiB :],
            headers={"Content-Type": OCTET_STREAM, "Content-Range": f"{4 * MiB}-{len(data) - 1}"},
        )
        await response.content()
        self.assertEqual(response.code, 500)
        self.assertEqual(failures, [2])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        await waitFor(lambda: self.r.get(self.prefix + f"uploadlock:{uploadID}") is None)
        offset = await self.c.blobs.uploadStatus(REPO, uploadID)
        self.assertGreaterEqual(offset, 16 * MiB)
        self.assertEqual([p[0] for p in json.loads(self.session(uploadID)[b"parts"])], [1])
        if offset < len(data):
            location = await patchChunk(
                self.b, location.replace(self.a.url, self.b.url), data[offset:], offset,
                len(data) - offset,
            )
        response = await finishUpload(self.c, location.replace(self.b.url, self.c.url),
                                      sha256(data))
        await expect(response, 201, "closing PUT")
        self.assertPublished(REPO, data)


class _Transport:
    """
    Counts pauses and resumes of the request's transport.
    """

    def __init__(self):
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.waiters: list[Deferred] = []

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        self.resumes += 1
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(None)
