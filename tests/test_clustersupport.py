"""
Tests for L{tests.clustersupport}: the Ceph S3 store and the Redis server
the scale-out tests run against really work, with boto3 and redis-py, and
clean up after themselves.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import redis
from twisted.trial.unittest import TestCase

from tests.clustersupport import (
    cephS3,
    newBucket,
    redisServer,
    s3StorageConfig,
)
from tests.procsupport import REPOSITORY_ROOT

MiB = 1024 * 1024


class CephS3Tests(TestCase):
    """
    The Ceph RGW endpoint speaks the S3 the storage driver needs.
    """

    def setUp(self):
        self.endpoint = cephS3()
        self.bucket = newBucket(self.endpoint)
        self.s3 = self.endpoint.client()

    def test_sameClusterPerProcess(self):
        """
        The cluster is started once per process: a second call returns the
        same endpoint.
        """
        self.assertIs(cephS3(), self.endpoint)
        self.assertTrue(self.endpoint.url.startswith("http://127.0.0.1:"))

    def test_bucketsAreFreshAndDistinct(self):
        """
        Every L{newBucket} is a new, empty bucket.
        """
        other = newBucket(self.endpoint)
        self.assertNotEqual(other, self.bucket)
        self.s3.put_object(Bucket=self.bucket, Key="k", Body=b"x")
        self.assertEqual(self.s3.list_objects_v2(Bucket=other).get("KeyCount"), 0)
        self.assertEqual(self.s3.list_objects_v2(Bucket=self.bucket).get("KeyCount"), 1)

    def test_putGetRange(self):
        """
        An object put is read back whole and by byte range.
        """
        data = os.urandom(100_000)
        self.s3.put_object(Bucket=self.bucket, Key="a/b", Body=data)
        self.assertEqual(self.s3.get_object(Bucket=self.bucket, Key="a/b")["Body"].read(), data)
        ranged = self.s3.get_object(Bucket=self.bucket, Key="a/b", Range="bytes=10-19")
        self.assertEqual(ranged["Body"].read(), data[10:20])

    def test_multipartAndCopy(self):
        """
        A multipart upload of two parts (the first the 5 MiB minimum)
        completes into one object, which a server-side copy duplicates.
        """
        part1, part2 = os.urandom(5 * MiB), os.urandom(1234)
        mpu = self.s3.create_multipart_upload(Bucket=self.bucket, Key="mp")["UploadId"]
        etags = []
        for n, data in ((1, part1), (2, part2)):
            r = self.s3.upload_part(
                Bucket=self.bucket, Key="mp", UploadId=mpu, PartNumber=n, Body=data
            )
            etags.append({"PartNumber": n, "ETag": r["ETag"]})
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key="mp", UploadId=mpu, MultipartUpload={"Parts": etags}
        )
        self.s3.copy_object(
            Bucket=self.bucket, Key="copy", CopySource={"Bucket": self.bucket, "Key": "mp"}
        )
        expected = hashlib.sha256(part1 + part2).hexdigest()
        for key in ("mp", "copy"):
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            self.assertEqual(hashlib.sha256(body).hexdigest(), expected)

    def test_conditionalCreate(self):
        """
        C{If-None-Match: *} makes a put fail when the key exists (the
        storage level's create-only-if-absent).
        """
        from botocore.exceptions import ClientError

        self.s3.put_object(Bucket=self.bucket, Key="once", Body=b"1", IfNoneMatch="*")
        with self.assertRaises(ClientError) as caught:
            self.s3.put_object(Bucket=self.bucket, Key="once", Body=b"2", IfNoneMatch="*")
        self.assertEqual(caught.exception.response["Error"]["Code"], "PreconditionFailed")

    def test_storageConfig(self):
        """
        L{s3StorageConfig} is a zot C{storage} section naming this endpoint,
        bucket and Redis.
        """
        config = s3StorageConfig(self.endpoint, self.bucket, "redis://127.0.0.1:1/0")
        self.assertTrue(os.path.isdir(config["rootDirectory"]))
        from tests import clustersupport

        self.assertIn(config["rootDirectory"], clustersupport._localDirectories)
        driver = config["storageDriver"]
        self.assertEqual(driver["name"], "s3")
        self.assertEqual(driver["bucket"], self.bucket)
        self.assertEqual(driver["regionendpoint"], self.endpoint.url)
        self.assertEqual(driver["rootdirectory"], "/zot")
        self.assertEqual(
            (driver["accesskey"], driver["secretkey"]),
            (self.endpoint.accessKey, self.endpoint.secretKey),
        )
        self.assertEqual(config["cacheDriver"], {"name": "redis", "url": "redis://127.0.0.1:1/0"})


class RedisServerTests(TestCase):
    """
    The Redis server answers, flushes and restarts empty on its port.
    """

    def setUp(self):
        self.server = redisServer()
        self.client = redis.Redis.from_url(self.server.url)
        self.addCleanup(self.client.close)

    def test_ping(self):
        """
        The server answers PING at its URL, once per process.
        """
        self.assertTrue(self.client.ping())
        self.assertIs(redisServer(), self.server)
        self.assertEqual(self.server.url, f"redis://127.0.0.1:{self.server.port}/0")

    def test_flushall(self):
        """
        L{flushall} deletes every key.
        """
        self.client.set("test_flushall", b"1")
        self.server.flushall()
        self.assertIsNone(self.client.get("test_flushall"))

    def test_restartEmpty(self):
        """
        L{restart} brings a new server up on the same port with no keys: a
        Redis restarted without persistence.
        """
        port = self.server.port
        pid = self.server.process.pid
        self.client.set("test_restartEmpty", b"1")
        self.server.restart()
        self.assertEqual(self.server.port, port)
        self.assertNotEqual(self.server.process.pid, pid)
        fresh = redis.Redis.from_url(self.server.url)
        self.addCleanup(fresh.close)
        self.assertIsNone(fresh.get("test_restartEmpty"))
        self.assertEqual(fresh.dbsize(), 0)


class NoLeakTests(TestCase):
    """
    The daemons never outlive the process that started them.
    """

    def _startAndEnd(self, ending: str) -> tuple[list[int], list[str]]:
        """
        Start both engines in a child Python, end it with C{ending}, and
        return the daemon PIDs and the directories it reported.
        """
        script = textwrap.dedent(
            f"""
            import os, sys
            from tests import clustersupport as c
            c.cephS3(); c.redisServer()
            pids = [p.pid for p in c._ceph._processes.values()] + [c._redis.process.pid]
            print(" ".join(map(str, pids)), flush=True)
            print(c._ceph.directory, c._redis.directory, flush=True)
            {ending}
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPOSITORY_ROOT,
            capture_output=True,
            timeout=120,
        )
        lines = done.stdout.decode().splitlines()
        self.assertEqual(len(lines), 2, done.stderr.decode()[-2000:])
        pids, directories = lines[0].split(), lines[1].split()
        self.assertEqual((len(pids), len(directories)), (4, 2))
        return [int(p) for p in pids], directories

    def _assertGone(self, pids: list[int]) -> None:
        """
        Every one of C{pids} is dead (or a zombie waiting for init to reap it).
        """
        import time

        deadline = time.monotonic() + 10
        alive = pids
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _running(p)]
            time.sleep(0.05)
        self.assertEqual(alive, [])

    def test_normalExit(self):
        """
        A process that exits normally stops its daemons (atexit) and removes
        their directories.
        """
        pids, directories = self._startAndEnd("sys.exit(0)")
        self._assertGone(pids)
        self.assertEqual([d for d in directories if os.path.exists(d)], [])

    def test_killed(self):
        """
        A process killed with SIGKILL takes its daemons with it
        (PR_SET_PDEATHSIG).
        """
        pids, directories = self._startAndEnd("os.kill(os.getpid(), 9)")
        for d in directories:
            self.addCleanup(shutil.rmtree, d, True)
        self._assertGone(pids)


def _running(pid: int) -> bool:
    """
    Whether C{pid} is a live process (not gone, not a zombie).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
