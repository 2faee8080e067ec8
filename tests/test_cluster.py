"""
Scale-out, through a real load balancer: three zotwist processes on one
bucket of a real Ceph RADOS Gateway and one real C{redis-server}, behind
HAProxy spreading every request round-robin (L{tests.lbsupport}).

Every request of these tests goes through the balancer, so consecutive
requests of a client land on different instances; each response names its
instance in C{X-Zotwist-Instance} (set by HAProxy), which is how the tests
prove where requests went.
"""

import hashlib
import json
import os
import re
import shutil

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.log import msg
from twisted.trial.unittest import FailTest, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests import images
from tests.apihelpers import OCI_MANIFEST, makeImage, resolve, withQuery
from tests.lbsupport import INSTANCE_HEADER, RegistryCluster
from tests.procsupport import PatternBlob, StreamingBody

MiB = 1024 * 1024
OCTET = {"Content-Type": ["application/octet-stream"]}
ACCEPT_MANIFESTS = {"Accept": [OCI_MANIFEST, images.MEDIA_TYPE_INDEX]}


def _sha256(data: bytes) -> str:
    """
    The C{sha256:<hex>} digest of C{data}.
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _instance(response) -> str:
    """
    The backend HAProxy sent the request to.
    """
    values = response.headers.getRawHeaders(INSTANCE_HEADER)
    if not values:
        raise FailTest(f"response {response.code} carries no {INSTANCE_HEADER}")
    return values[0]


def _header(response, name: str) -> "str | None":
    """
    The first value of a response header, or L{None}.
    """
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


class _Client:
    """
    One registry client talking to the balancer over its own keep-alive
    connections, and retrying what failed, as registry clients do: a
    request that got no answer or a 5xx (the balancer's 502 when an
    instance died under it) is sent again, a blob upload from its start.

    @ivar retries: how many requests failed and were retried.
    """

    def __init__(self, cluster: RegistryCluster, attempts: int = 8) -> None:
        self.cluster = cluster
        self.url = cluster.url
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.client = treq.client.HTTPClient(Agent(reactor, pool=self.pool))
        self.attempts = attempts
        self.retries = 0

    async def _retrying(self, what: str, attempt):
        """
        Run C{attempt()} until it returns, at most L{attempts} times.
        """
        for number in range(self.attempts):
            try:
                return await attempt()
            except _Retry as e:
                last = e
            except Exception as e:  # no answer: connection refused/reset
                last = e
            self.retries += 1
            await deferLater(reactor, 0.2 * (number + 1))
        raise FailTest(f"{what}: failed {self.attempts} times; last: {last!r}")

    async def pushBlob(self, repo: str, data: bytes) -> str:
        """
        POST + PUT one blob (monolithic), retried whole.
        """
        digest = _sha256(data)

        async def attempt():
            response = await self.client.post(f"{self.url}/v2/{repo}/blobs/uploads/", data=b"")
            await response.content()
            _raiseUnlessStatus(response, 202, f"POST upload of {digest}")
            location = resolve(self, _header(response, "Location"))
            response = await self.client.put(
                withQuery(location, [("digest", digest)]), data=data, headers=OCTET
            )
            await response.content()
            _raiseUnlessStatus(response, 201, f"PUT {digest}")

        await self._retrying(f"push of blob {digest} to {repo}", attempt)
        return digest

    async def putManifest(self, repo: str, tag: str, manifest: bytes) -> None:
        """
        PUT a manifest under a tag, retried until it answers 201.
        """

        async def attempt():
            response = await self.client.put(
                f"{self.url}/v2/{repo}/manifests/{tag}",
                data=manifest,
                headers={"Content-Type": [OCI_MANIFEST]},
            )
            body = await response.content()
            _raiseUnlessStatus(response, 201, f"manifest PUT {repo}:{tag}", body)

        await self._retrying(f"manifest PUT {repo}:{tag}", attempt)

    async def pushImage(self, repo: str, tag: str, seed: str, layers: int = 2):
        """
        Push L{makeImage}C{(seed)}'s blobs and its manifest under C{tag}.

        @return: the image.
        """
        image = makeImage(seed, layerCount=layers)
        await self.pushBlob(repo, image.config)
        for layer in image.layers:
            await self.pushBlob(repo, layer)
        await self.putManifest(repo, tag, image.manifest)
        return image

    async def get(self, url: str, headers=None) -> "tuple[object, bytes]":
        """
        GET with retries on no answer or a 5xx; returns the response and
        its body.
        """

        async def attempt():
            response = await self.client.get(url, headers=headers)
            body = await response.content()
            if response.code >= 500:
                raise _Retry(f"GET {url}: {response.code}")
            return response, body

        return await self._retrying(f"GET {url}", attempt)

    async def pullWhole(self, repo: str, reference: str) -> str:
        """
        Pull a manifest and every blob it names; each must hash to its
        digest.

        @return: the manifest's digest.
        """
        response, manifest = await self.get(
            f"{self.url}/v2/{repo}/manifests/{reference}", ACCEPT_MANIFESTS
        )
        if response.code != 200:
            raise FailTest(f"{repo}:{reference}: manifest GET {response.code}: {manifest!r}")
        digest = _sha256(manifest)
        if _header(response, "Docker-Content-Digest") != digest:
            raise FailTest(f"{repo}:{reference}: manifest digest header does not match")
        document = json.loads(manifest)
        for descriptor in [document["config"], *document["layers"]]:
            response, data = await self.get(f"{self.url}/v2/{repo}/blobs/{descriptor['digest']}")
            if response.code != 200 or _sha256(data) != descriptor["digest"]:
                raise FailTest(
                    f"{repo}:{reference}: blob {descriptor['digest']} answered "
                    f"{response.code} with {len(data)} bytes hashing to {_sha256(data)}"
                )
        return digest

    async def tags(self, repo: str) -> list:
        """
        The repository's tag list.
        """
        response, body = await self.get(f"{self.url}/v2/{repo}/tags/list")
        if response.code != 200:
            raise FailTest(f"tags of {repo}: {response.code} {body!r}")
        return json.loads(body)["tags"] or []

    def close(self) -> Deferred:
        """
        Close the keep-alive connections.
        """
        return self.pool.closeCachedConnections()


def _children(pid: int) -> "list[int]":
    """
    The live child processes of C{pid} (from C{/proc}).
    """
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children.extend(int(child) for child in f.read().split())
    return children


class _Retry(Exception):
    """
    An answer a client retries (a 5xx, or an unexpected status).
    """


def _raiseUnlessStatus(response, expected: int, what: str, body: bytes = b"") -> None:
    """
    Raise L{_Retry} for a 5xx, and fail the test for any other unexpected
    status (a 4xx is the registry refusing, not an instance dying).
    """
    if response.code == expected:
        return
    if response.code >= 500:
        raise _Retry(f"{what}: {response.code}")
    raise FailTest(f"{what}: expected {expected}, got {response.code}: {body[:300]!r}")


def _bucketBlobs(cluster: RegistryCluster) -> "dict[str, int]":
    """
    Every key under a C{blobs/} directory of the layout in the bucket,
    with its size (blocking; test set-up and checks only).
    """
    s3 = cluster.s3.client()
    keys = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket):
        for item in page.get("Contents", []):
            if "/blobs/" in item["Key"]:
                keys[item["Key"]] = item["Size"]
    return keys


def _assertBlobKeysWhole(testCase, cluster: RegistryCluster) -> int:
    """
    Assert that every blob key in the bucket holds content that hashes to
    its name: nothing half-written is visible as a blob.

    @return: how many blob keys were checked.
    """
    s3 = cluster.s3.client()
    keys = _bucketBlobs(cluster)
    for key in keys:
        algorithm, hexDigest = key.split("/blobs/", 1)[1].split("/", 1)
        body = s3.get_object(Bucket=cluster.bucket, Key=key)["Body"]
        hasher = hashlib.new(algorithm)
        for piece in iter(lambda: body.read(MiB), b""):
            hasher.update(piece)
        testCase.assertEqual(hasher.hexdigest(), hexDigest, f"blob key {key}")
    return len(keys)


class ClusterTests(TestCase):
    """
    Three instances on S3 + Redis behind HAProxy.
    """

    timeout = 180

    async def startCluster(self, **kwargs) -> RegistryCluster:
        """
        Start three instances and the balancer for this test.
        """
        cluster = RegistryCluster(self, count=3, **kwargs)
        await cluster.start()
        return cluster

    def client(self, cluster: RegistryCluster) -> _Client:
        """
        A retrying client of the cluster, closed at the end of the test.
        """
        client = _Client(cluster)
        self.addCleanup(client.close)
        return client

    async def skopeo(self, *args) -> bytes:
        """
        Run the real C{skopeo --insecure-policy ARGS} with a private HOME
        and TMPDIR, without blocking the reactor.
        """
        skopeo = shutil.which("skopeo")
        if skopeo is None:
            self.fail("skopeo is not installed: apt-get install skopeo")
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TMPDIR": home}
        out, err, code = await getProcessOutputAndValue(
            skopeo, ["--insecure-policy", *args], env=env
        )
        if code != 0:
            self.fail(f"skopeo {' '.join(args)} exited {code}: {err.decode()}")
        return out

    def assertSameImage(self, source: str, copy: str, tag: str, digest: str) -> None:
        """
        The layout C{copy} holds C{tag} as C{digest}, with the manifest and
        every blob byte for byte as in C{source}.
        """
        self.assertEqual(images.taggedDescriptor(copy, tag)["digest"], digest)
        manifest = images.readJSONBlob(source, digest)
        self.assertEqual(images.readBlob(copy, digest), images.readBlob(source, digest))
        for descriptor in [manifest["config"], *manifest["layers"]]:
            data = images.readBlob(copy, descriptor["digest"])
            self.assertEqual(_sha256(data), descriptor["digest"])
            self.assertEqual(data, images.readBlob(source, descriptor["digest"]))

    async def test_skopeoRoundTrip(self):
        """
        C{skopeo copy} of a three-layer image from an OCI layout into the
        cluster and back out into another layout keeps the manifest
        digest and every blob byte for byte; skopeo's requests were spread
        over all three instances (each one's access log shows some).  Every
        instance is ready (C{/readyz}) and serves its metrics.
        """
        cluster = await self.startCluster(config={"extensions": {"metrics": {}}})
        ready = set()
        for _ in range(3):
            response, body = await self.client(cluster).get(f"{cluster.url}/readyz")
            self.assertEqual((response.code, body), (200, b"ok"))
            ready.add(_instance(response))
        self.assertEqual(ready, set(cluster.names))
        work = os.path.abspath(self.mktemp())
        source = os.path.join(work, "source")
        digest = images.buildImage(source, "v1", layers=3, layerSize=2 * MiB, seed=7)
        host = cluster.url.split("://", 1)[1]
        remote = f"docker://{host}/cluster/skopeo:v1"

        def served():
            return [
                len(re.findall(r" /v2/cluster/skopeo/\S* [0-9]{3} ", i.log()))
                for i in cluster.instances
            ]

        before = served()
        await self.skopeo("copy", "--preserve-digests", "--dest-tls-verify=false",
                          f"oci:{source}:v1", remote)
        copy = os.path.join(work, "copy")
        await self.skopeo("copy", "--preserve-digests", "--src-tls-verify=false",
                          remote, f"oci:{copy}:v1")
        self.assertSameImage(source, copy, "v1", digest)
        after = served()
        self.assertEqual(before, [0, 0, 0])
        self.assertTrue(all(after), f"requests per instance: {after}")
        counted = 0
        for _ in range(3):
            response, body = await self.client(cluster).get(f"{cluster.url}/metrics")
            self.assertEqual(response.code, 200)
            counted += sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.decode().splitlines()
                if line.startswith("zot_http_requests_total{") and 'route="blob' in line
            )
        self.assertGreater(counted, 0)

    async def test_chunkedUploadAcrossInstances(self):
        """
        A chunked upload whose POST and three PATCHes each land on another
        instance completes, on a fourth request, with the right digest:
        the session (offset, multipart parts, hash state) lives in Redis
        and S3, not in one process.  The chunks leave tails smaller than an
        S3 part between requests and cross a part boundary.
        """
        cluster = await self.startCluster()
        client = self.client(cluster)
        blob = PatternBlob(13 * MiB + 12345, seed=3)
        data = blob.read(0, blob.size)
        digest = _sha256(data)
        chunks = [(0, 6 * MiB), (6 * MiB, 1 * MiB), (7 * MiB, 5 * MiB + 100)]
        repo = "cluster/chunked"

        response = await client.client.post(f"{cluster.url}/v2/{repo}/blobs/uploads/", data=b"")
        await response.content()
        self.assertEqual(response.code, 202)
        served = [_instance(response)]
        location = resolve(client, _header(response, "Location"))
        for start, length in chunks:
            response = await client.client.patch(
                location,
                data=data[start:start + length],
                headers={**OCTET, "Content-Range": [f"{start}-{start + length - 1}"]},
            )
            body = await response.content()
            self.assertEqual(response.code, 202, body)
            self.assertEqual(_header(response, "Range"), f"0-{start + length - 1}")
            served.append(_instance(response))
            location = resolve(client, _header(response, "Location"))
        rest = data[12 * MiB + 100:]
        response = await client.client.put(
            withQuery(location, [("digest", digest)]),
            data=rest,
            headers={**OCTET, "Content-Range": [f"{12 * MiB + 100}-{len(data) - 1}"]},
        )
        body = await response.content()
        self.assertEqual(response.code, 201, body)
        served.append(_instance(response))

        patches = served[1:4]
        self.assertEqual(len(set(patches)), 3, f"PATCHes served by {patches}")
        for a, b in zip(served, served[1:]):
            self.assertNotEqual(a, b, f"consecutive requests on one instance: {served}")
        uploadID = location.split("/blobs/uploads/", 1)[1].split("?", 1)[0]
        for name in patches:
            self.assertEqual(
                len(re.findall(f"PATCH /v2/{repo}/blobs/uploads/{uploadID} 202 ",
                               cluster.instanceNamed(name).log())),
                1,
                name,
            )

        response, pulled = await client.get(f"{cluster.url}/v2/{repo}/blobs/{digest}")
        self.assertEqual(response.code, 200)
        self.assertEqual(len(pulled), len(data))
        self.assertEqual(_sha256(pulled), digest)
        response = await client.client.get(
            f"{cluster.url}/v2/{repo}/blobs/{digest}", headers={"Range": ["bytes=6291400-6291500"]}
        )
        self.assertEqual(response.code, 206)
        self.assertEqual(await response.content(), data[6291400:6291501])

    async def test_eightClientsOneRepository(self):
        """
        Eight clients push eight different images to one repository at
        once, each under its own tag: all eight tags are listed and each
        pulls whole with its own manifest.  Each instance runs two worker
        processes (C{http.workers: 2}), which on S3 are instances like the
        others.
        """
        cluster = await self.startCluster(config={"http": {"workers": 2}})
        repo = "cluster/eight"
        clients = [self.client(cluster) for _ in range(8)]
        pushed = await gatherResults(
            [
                ensureDeferred(client.pushImage(repo, f"t{i}", f"eight-{i}", layers=2))
                for i, client in enumerate(clients)
            ],
            consumeErrors=True,
        )
        reader = self.client(cluster)
        self.assertEqual(sorted(await reader.tags(repo)), [f"t{i}" for i in range(8)])
        for i, image in enumerate(pushed):
            self.assertEqual(await reader.pullWhole(repo, f"t{i}"), image.digest)
        for name, instance in zip(cluster.names, cluster.instances):
            workers = _children(instance.pid)
            self.assertEqual(len(workers), 1, f"{name}'s workers: {workers}")
            self.assertNotIn("Traceback", instance.log(), name)

    async def test_killInstanceDuringPushes(self):
        """
        One instance is killed with SIGKILL in the middle of a chunked
        upload it is receiving while four other clients push: the chunked
        client sees its PATCH fail, asks the session's offset through the
        balancer (another instance answers from the shared state) and
        resumes there on another instance, once the dead instance's session
        lock expired; the pushers retry what failed and succeed.
        Afterwards every tag whose manifest PUT answered 201 pulls whole,
        every listed tag does, and every blob key in the bucket hashes to
        its name.
        """
        cluster = await self.startCluster()
        repo = "cluster/kill"
        blob = PatternBlob(8 * MiB, seed=11)
        digest = blob.digest()
        chunked = self.client(cluster)
        response = await chunked.client.post(f"{cluster.url}/v2/{repo}/blobs/uploads/", data=b"")
        await response.content()
        self.assertEqual(response.code, 202)
        location = resolve(chunked, _header(response, "Location"))
        # Round-robin: with nobody else sending yet, the PATCH goes to the
        # instance after the one that answered the POST.  (Verified below:
        # the PATCH fails only if its instance is the one killed.)
        victim = cluster.names[(cluster.names.index(_instance(response)) + 1) % 3]
        step = 64 * 1024
        body = StreamingBody(
            (blob.read(offset, step) for offset in range(0, blob.size, step)),
            length=blob.size,
            delay=0.1,
        )
        patch = ensureDeferred(
            _readAll(
                chunked.client.patch(
                    location, data=body,
                    headers={**OCTET, "Content-Range": [f"0-{blob.size - 1}"]},
                )
            )
        )
        await body.whenSent(step)

        done: dict[str, str] = {}
        killed = Deferred()
        firstPushes = []

        async def pushLoop(index: int, client: _Client, first: Deferred) -> None:
            number = afterKill = 0
            while not killed.called or afterKill < 2:
                tag = f"c{index}-{number}"
                image = await client.pushImage(repo, tag, f"kill-{index}-{number}")
                done[tag] = image.digest
                number += 1
                if killed.called:
                    afterKill += 1
                if not first.called:
                    first.callback(None)

        pushers = [self.client(cluster) for _ in range(4)]
        loops = []
        for index, pusher in enumerate(pushers):
            first = Deferred()
            firstPushes.append(first)
            loops.append(ensureDeferred(pushLoop(index, pusher, first)))
        await gatherResults(firstPushes)
        await body.whenSent(2 * MiB)
        self.assertLess(body.sent, blob.size, "the PATCH ended before the kill")
        cluster.instanceNamed(victim).kill()
        killed.callback(None)
        try:
            response, _ = await patch
            failedStatus = response.code
        except Exception:
            failedStatus = None
        self.assertNotEqual(failedStatus, 202, "a PATCH to a killed instance cannot succeed")

        # The session's state is the cluster's: a surviving instance reports
        # its offset (no more than what reached the dead instance).
        response, _ = await chunked.get(location)
        self.assertEqual(response.code, 204)
        self.assertNotEqual(_instance(response), victim)
        reported = _header(response, "Range")
        # "0-0" is an empty session, as the Docker registry writes it.
        offset = 0 if reported in (None, "0-0") else int(reported.split("-")[1]) + 1
        self.assertLessEqual(offset, body.sent)
        location = resolve(chunked, _header(response, "Location") or location)
        # Resume there, on another instance: the dead instance's lock on the
        # session expires (it is no longer kept alive), and the request
        # waits for that rather than failing.
        response = await chunked.client.put(
            withQuery(location, [("digest", digest)]),
            data=blob.read(offset, blob.size - offset),
            headers={**OCTET, "Content-Range": [f"{offset}-{blob.size - 1}"]},
        )
        answer = await response.content()
        self.assertEqual(response.code, 201, answer)
        self.assertNotEqual(_instance(response), victim)

        await gatherResults(loops, consumeErrors=True)
        msg(
            f"kill test: victim {victim}, PATCH answer {failedStatus}, resumed at {offset} of "
            f"{body.sent} sent, resume answer {response.code}, {len(done)} images pushed, "
            f"pusher retries {[p.retries for p in pushers]}"
        )
        reader = self.client(cluster)
        listed = await reader.tags(repo)
        self.assertLessEqual(set(done), set(listed))
        for tag in listed:
            pulled = await reader.pullWhole(repo, tag)
            if tag in done:
                self.assertEqual(pulled, done[tag], tag)
        response, data = await reader.get(f"{cluster.url}/v2/{repo}/blobs/{digest}")
        self.assertEqual((response.code, _sha256(data)), (200, digest))
        checked = await deferToThread(_assertBlobKeysWhole, self, cluster)
        self.assertGreater(checked, len(done))

    async def test_gcOnLeaderWhilePushing(self):
        """
        With a tiny C{gcDelay}, GC runs on the leader only while two
        clients keep pushing: an orphan blob pushed first disappears from
        the bucket, exactly one instance logs that it is the leader, and
        every image pushed meanwhile pulls whole afterwards.  When the
        leader is killed, another instance takes the lease and collects.
        """
        cluster = await self.startCluster(storage={"gcDelay": "3s", "gcInterval": "1s"})
        client = self.client(cluster)
        orphan = os.urandom(4096)
        orphanDigest = await client.pushBlob("cluster/gc-orphan", orphan)
        orphanKey = f"zot/cluster/gc-orphan/blobs/sha256/{orphanDigest.split(':')[1]}"
        self.assertIn(orphanKey, await deferToThread(_bucketBlobs, cluster))

        pushed: dict[str, str] = {}
        stop = []

        async def pushLoop(index: int, pusher: _Client) -> None:
            number = 0
            while not stop or number < 3:
                tag = f"p{index}-{number}"
                image = await pusher.pushImage("cluster/gc", tag, f"gc-{index}-{number}")
                pushed[tag] = image.digest
                number += 1

        loops = [ensureDeferred(pushLoop(i, self.client(cluster))) for i in range(2)]
        for _ in range(300):
            if orphanKey not in await deferToThread(_bucketBlobs, cluster):
                break
            await deferLater(reactor, 0.1)
        else:
            self.fail("GC did not remove the orphan blob within 30 s")
        stop.append(True)
        await gatherResults(loops, consumeErrors=True)

        leaders = [
            name for name, instance in zip(cluster.names, cluster.instances)
            if "is now the leader" in instance.log()
        ]
        self.assertEqual(len(leaders), 1, f"leaders: {leaders}")
        collected = [
            name for name, instance in zip(cluster.names, cluster.instances)
            if "GC: cluster/gc-orphan: removed 0 manifests, 1 blobs" in instance.log()
        ]
        self.assertEqual(collected, leaders)
        reader = self.client(cluster)
        self.assertEqual(sorted(await reader.tags("cluster/gc")), sorted(pushed))
        for tag, digest in pushed.items():
            self.assertEqual(await reader.pullWhole("cluster/gc", tag), digest)

        # The leader dies: its lease expires and another instance takes it,
        # and the GC with it.
        cluster.instanceNamed(leaders[0]).kill()
        second = await client.pushBlob("cluster/gc-orphan2", os.urandom(4096))
        secondKey = f"zot/cluster/gc-orphan2/blobs/sha256/{second.split(':')[1]}"
        for _ in range(600):
            if secondKey not in await deferToThread(_bucketBlobs, cluster):
                break
            await deferLater(reactor, 0.1)
        else:
            self.fail("no instance took over the GC within 60 s of the leader's death")
        successors = [
            name for name, instance in zip(cluster.names, cluster.instances)
            if name != leaders[0] and "is now the leader" in instance.log()
        ]
        self.assertEqual(len(successors), 1, f"successors: {successors}")
        self.assertIn(
            "GC: cluster/gc-orphan2: removed 0 manifests, 1 blobs",
            cluster.instanceNamed(successors[0]).log(),
        )
        for tag, digest in pushed.items():
            self.assertEqual(await reader.pullWhole("cluster/gc", tag), digest)

    async def test_redisRestartedEmpty(self):
        """
        Redis restarted empty (no persistence) loses nothing: the instances
        rebuild tags and the catalog from the bucket, and the images pull
        whole and new pushes work afterwards.
        """
        cluster = await self.startCluster()
        client = self.client(cluster)
        first = await client.pushImage("cluster/rebuild-a", "v1", "rebuild-a")
        second = await client.pushImage("cluster/rebuild-b", "v2", "rebuild-b")
        redisBefore = cluster.redis.process.pid
        cluster.redis.restart()  # a new redis-server, without persistence: empty
        self.assertNotEqual(cluster.redis.process.pid, redisBefore)

        for _ in range(300):
            response = await client.client.get(f"{cluster.url}/v2/_catalog")
            body = await response.content()
            if response.code == 200 and {"cluster/rebuild-a", "cluster/rebuild-b"} <= set(
                json.loads(body)["repositories"]
            ):
                break
            await deferLater(reactor, 0.1)
        else:
            self.fail(f"the catalog was not rebuilt within 30 s: {response.code} {body!r}")
        self.assertTrue(
            any("Rebuilt the Redis state: 2 repositories" in i.log() for i in cluster.instances),
            "no instance logged the rebuild",
        )
        # Every instance answers from the rebuilt state.
        for _ in range(3):
            self.assertEqual(await client.tags("cluster/rebuild-a"), ["v1"])
            self.assertEqual(await client.tags("cluster/rebuild-b"), ["v2"])
        self.assertEqual(await client.pullWhole("cluster/rebuild-a", "v1"), first.digest)
        self.assertEqual(await client.pullWhole("cluster/rebuild-b", "v2"), second.digest)
        third = await client.pushImage("cluster/rebuild-a", "v3", "rebuild-c")
        self.assertEqual(sorted(await client.tags("cluster/rebuild-a")), ["v1", "v3"])
        self.assertEqual(await client.pullWhole("cluster/rebuild-a", "v3"), third.digest)

    async def test_redirectBlobURL(self):
        """
        With C{redirectBlobURL}, a blob GET through the balancer answers
        307 with a presigned URL of the RADOS Gateway, which serves the
        blob's bytes; HEAD still answers with the size; skopeo pulls an
        image whole through the redirects.
        """
        cluster = await self.startCluster(storage={"redirectBlobURL": True})
        client = self.client(cluster)
        data = os.urandom(100 * 1024)
        digest = await client.pushBlob("cluster/redirect", data)
        url = f"{cluster.url}/v2/cluster/redirect/blobs/{digest}"
        response = await client.client.get(url, allow_redirects=False)
        await response.content()
        self.assertEqual(response.code, 307)
        location = _header(response, "Location")
        self.assertTrue(location.startswith(cluster.s3.url + "/"), location)
        presigned = await client.client.get(location)
        self.assertEqual(presigned.code, 200)
        self.assertEqual(await presigned.content(), data)
        response = await client.client.head(url)
        self.assertEqual(response.code, 200)
        self.assertEqual(_header(response, "Content-Length"), str(len(data)))

        # skopeo follows the redirects: its pull's layers come from Ceph.
        work = os.path.abspath(self.mktemp())
        source = os.path.join(work, "source")
        digest = images.buildImage(source, "v1", layers=2, layerSize=MiB, seed=8)
        remote = f"docker://{cluster.url.split('://', 1)[1]}/cluster/redirect-image:v1"
        await self.skopeo("copy", "--preserve-digests", "--dest-tls-verify=false",
                          f"oci:{source}:v1", remote)
        copy = os.path.join(work, "copy")
        await self.skopeo("copy", "--preserve-digests", "--src-tls-verify=false",
                          remote, f"oci:{copy}:v1")
        self.assertSameImage(source, copy, "v1", digest)
        redirected = sum(
            len(re.findall(r"GET /v2/cluster/redirect-image/blobs/\S+ 307 ", i.log()))
            for i in cluster.instances
        )
        self.assertEqual(redirected, 3)  # the config and two layers


async def _readAll(requesting):
    """
    A response and its body.
    """
    response = await requesting
    return response, await response.content()
