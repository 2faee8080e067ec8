"""
Online garbage collection against concurrent pushes, and killed mid-way.

Clients push images the way real ones do (HEAD each blob, upload the ones
missing, one by one, then PUT the manifest) while the collector runs every
100 ms with a one-second C{gcDelay}.  Half of the images are pushed by
digest only (untagged: garbage once a second old), the others under a tag;
each image has a unique config and layer and one of a few layers shared by
all clients, so a shared layer often ends up referenced only by collected
manifests, old, and HEADed by a client about to reference it again: the
race the collector must not lose.

The promises checked:
 - every image whose manifest PUT returned 201 under a tag pulls whole
   (manifest digest, and every blob hashing right), and a sample of them
   copies with skopeo (C{--preserve-digests});
 - no manifest PUT is refused: a blob a client HEADed is kept long enough
   for its manifest (and a PUT that would not return 201 could only fail
   cleanly with C{MANIFEST_BLOB_UNKNOWN}, never with a server error);
 - once pushes stop and the delay has passed, the blob files on disk are
   exactly the tagged images' manifests, configs and layers;
 - killed with C{SIGKILL} at random moments, the storage passes the scrub
   after every kill and every acknowledged image still pulls whole.
"""

import json
import os
import random
import shutil
import time

from treq import content
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import FailTest, TestCase

from tests.procsupport import (
    NETWORK_ERRORS,
    RegistryProcess,
    pullDigest,
    request,
    sha256Digest,
    waitUntil,
)
from tests.support import startRegistry
from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.storage.scrub import scrubRootBlocking

#: The collector's settings in these tests.
GC_CONFIG = {"storage": {"gc": True, "gcDelay": "1s", "gcInterval": "100ms"}}
GC_DELAY = 1.0
#: How long the race test pushes, in seconds.
RACE_SECONDS = 4.0
#: Clients pushing at once.
CLIENTS = 3
#: Tagged images the race test also pulls with skopeo (a few seconds each
#: batch; every one of them is pulled and hashed over HTTP anyway).
SKOPEO_PULLS = 4
#: Kill/restart cycles of the fault-injection test (reduced for the suite;
#: the issue asks for 50 in a long run: ZOTWIST_GC_CRASH_ROUNDS=50).
GC_CRASH_ROUNDS = int(os.environ.get("ZOTWIST_GC_CRASH_ROUNDS", "5"))

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
#: Layers shared by all clients: many, each used now and then, so that one
#: is often old and referenced only by collected manifests when a client
#: HEADs it and pushes a manifest naming it.
_SHARED = [f"shared layer {n}\n".encode() * 50 for n in range(30)]
#: How often a tagged image uses a shared layer (and so keeps it for good).
SHARED_IN_TAGGED = 0.2


def _descriptor(mediaType: str, data: bytes) -> dict:
    return {"mediaType": mediaType, "digest": sha256Digest(data), "size": len(data)}


class _Image:
    """
    A small image: unique config and layer, one shared layer.
    """

    def __init__(self, repo: str, name: str, shared: bytes | None, tagged: bool):
        self.repo = repo
        self.config = json.dumps({"os": "linux", "name": name}).encode()
        self.blobs = [self.config, f"layer of {name}\n".encode() * 20]
        if shared is not None:
            # First, as a client pushes its base layer first: the manifest
            # follows its HEAD only after the other uploads.
            self.blobs.insert(0, shared)
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": _descriptor("application/vnd.oci.image.config.v1+json", self.config),
            "layers": [_descriptor(LAYER_TYPE, b) for b in self.blobs if b is not self.config],
        }).encode()
        self.digest = sha256Digest(self.manifest)
        self.tag = name if tagged else None


class _Client:
    """
    Pushes images in a loop until told to stop or the server goes away.

    @ivar committed: tagged images whose manifest PUT returned 201.
    @ivar rejected: manifest PUTs refused with C{MANIFEST_BLOB_UNKNOWN}.
    """

    def __init__(self, number: int, repo: str, rng: random.Random):
        self.number = number
        self.repo = repo
        self.rng = rng
        self.committed: list[_Image] = []
        self.untagged: list[_Image] = []
        self.rejected = 0
        self.count = 0
        self.stop = False

    async def run(self, registry) -> None:
        while not self.stop:
            self.count += 1
            tagged = self.rng.random() < 0.5
            shared = self.rng.choice(_SHARED)
            if tagged and self.rng.random() >= SHARED_IN_TAGGED:
                shared = None
            image = _Image(self.repo, f"c{self.number}-{self.count}", shared, tagged)
            try:
                await self.push(registry, image)
            except NETWORK_ERRORS:
                return

    async def push(self, registry, image: _Image) -> None:
        base = f"{registry.url}/v2/{image.repo}"
        for blob in image.blobs:
            digest = sha256Digest(blob)
            response = await request(registry, "HEAD", f"{base}/blobs/{digest}")
            await content(response)
            # The time other blobs' uploads would take (well under half
            # the delay, the age a HEAD guarantees).
            await deferLater(reactor, self.rng.uniform(0.02, 0.12))
            if response.code == 200:
                continue
            response = await request(
                registry, "POST", f"{base}/blobs/uploads/?digest={digest}", data=blob,
                headers={"Content-Type": ["application/octet-stream"]},
            )
            body = await content(response)
            if response.code != 201:
                raise FailTest(f"blob POST {digest}: {response.code} {body[:300]!r}")
        reference = image.tag or image.digest
        response = await request(
            registry, "PUT", f"{base}/manifests/{reference}", data=image.manifest,
            headers={"Content-Type": [oci.OCI_MANIFEST]},
        )
        body = await content(response)
        if response.code == 201:
            (self.committed if image.tag else self.untagged).append(image)
        elif response.code == 400 and b"MANIFEST_BLOB_UNKNOWN" in body:
            self.rejected += 1
        else:
            raise FailTest(f"manifest PUT {reference}: {response.code} {body[:300]!r}")


async def assertPullsWhole(testCase: TestCase, registry, images) -> None:
    """
    Every image of C{images} pulls by tag: the same manifest digest, and
    every blob hashing to its digest.
    """
    for image in images:
        response = await request(
            registry, "GET", f"{registry.url}/v2/{image.repo}/manifests/{image.tag}",
            headers={"Accept": [oci.OCI_MANIFEST]},
        )
        body = await content(response)
        testCase.assertEqual(response.code, 200, f"{image.repo}:{image.tag}: {body[:200]!r}")
        testCase.assertEqual(sha256Digest(body), image.digest)
        for blob in image.blobs:
            digest = sha256Digest(blob)
            pulled, length, _ = await pullDigest(registry, image.repo, digest)
            testCase.assertEqual((pulled, length), (digest, len(blob)))


def blobDigestsOnDisk(root: str) -> set:
    """
    C{(repository, digest)} of every blob file under C{root}.
    """
    found = set()
    for directory, _, names in os.walk(root):
        parent, algorithm = os.path.split(directory)
        if os.path.basename(parent) != "blobs":
            continue
        repo = os.path.relpath(os.path.dirname(parent), root)
        for name in names:
            digest = f"{algorithm}:{name}"
            try:
                oci.parseDigest(digest)
            except RegistryError:
                continue  # not a blob: a temporary file
            found.add((repo, digest))
    return found


class GCRaceTests(TestCase):
    """
    The collector and concurrent pushes in one running registry.
    """

    timeout = 120

    async def pullWithSkopeo(self, reg, images) -> None:
        """
        Copy each image with skopeo (which checks every digest) into an OCI
        layout, and check the manifest it got.
        """
        skopeo = shutil.which("skopeo")
        if skopeo is None:
            self.fail("skopeo is not installed: run `bash tests/run.sh`, which installs it")
        work = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(work, "home"))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.path.join(work, "home"),
               "TMPDIR": work}
        host = reg.url.split("://", 1)[1]
        for image in images:
            layout = os.path.join(work, image.tag)
            out, err, code = await getProcessOutputAndValue(skopeo, [
                "--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false",
                f"docker://{host}/{image.repo}:{image.tag}", f"oci:{layout}:{image.tag}",
            ], env=env)
            self.assertEqual(code, 0, err.decode(errors="replace"))
            with open(os.path.join(layout, "index.json")) as f:
                self.assertEqual(json.load(f)["manifests"][0]["digest"], image.digest)

    async def test_pushesDuringCollection(self):
        """
        L{CLIENTS} clients push for L{RACE_SECONDS} while the collector
        runs every 100 ms: every tagged image acknowledged pulls whole,
        nothing but C{MANIFEST_BLOB_UNKNOWN} is refused, the collector did
        collect meanwhile, and once the delay has passed only the tagged
        images' blobs are left.
        """
        reg = await startRegistry(self, GC_CONFIG)
        collector = reg.service.getServiceNamed("gc").collector
        rng = random.Random("gc-race")
        clients = [_Client(n, "race/app" if n < 2 else "race/tools", rng)
                   for n in range(CLIENTS)]
        running = [ensureDeferred(c.run(reg)) for c in clients]
        await deferLater(reactor, RACE_SECONDS)
        for client in clients:
            client.stop = True
        for success, result in await DeferredList(running, consumeErrors=True):
            if not success:
                result.raiseException()
        committed = [i for c in clients for i in c.committed]
        untagged = [i for c in clients for i in c.untagged]
        self.assertGreater(len(committed), 10)
        self.assertGreater(len(untagged), 10)
        self.assertGreater(len(collector.removed.manifests), 0)
        await assertPullsWhole(self, reg, committed)

        expected = {(i.repo, i.digest) for i in committed} | {
            (i.repo, sha256Digest(b)) for i in committed for b in i.blobs
        }
        # Everything else is older than the delay one delay from now; the
        # collector then needs a round or two (slower on a loaded machine).
        await deferLater(reactor, GC_DELAY)
        rounds = collector.rounds
        await waitUntil(lambda: collector.rounds > rounds + 1, timeout=30,
                        message="the collector did not run")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and blobDigestsOnDisk(reg.root) != expected:
            await deferLater(reactor, 0.2)
        self.assertEqual(blobDigestsOnDisk(reg.root), expected)
        for image in untagged:
            response = await request(
                reg, "GET", f"{reg.url}/v2/{image.repo}/manifests/{image.digest}"
            )
            await content(response)
            self.assertEqual(response.code, 404)
        self.assertEqual(await deferToScrub(reg.root), [])
        await self.pullWithSkopeo(reg, committed[:: max(1, len(committed) // SKOPEO_PULLS)])
        # A HEAD guarantees the blob half the delay, and each client PUTs
        # its manifest well within that: no push is refused.  (Without the
        # refresh on HEAD, shared layers get collected in between and some
        # PUTs fail with MANIFEST_BLOB_UNKNOWN.)
        self.assertEqual([c.rejected for c in clients], [0] * CLIENTS)


def deferToScrub(root: str):
    """
    The scrub's findings (report only) on C{root}, from a thread.
    """
    return deferToThread(scrubRootBlocking, root, None, False)


class GCCrashTests(TestCase):
    """
    C{SIGKILL} during pushes and collections.
    """

    timeout = 60 + 30 * GC_CRASH_ROUNDS

    async def test_killDuringPushesAndCollections(self):
        """
        L{GC_CRASH_ROUNDS} times: clients push while the collector runs
        every 100 ms; the server is killed at a seeded random moment; the
        storage passes the scrub before the restart, and after it every
        tagged image acknowledged in any round pulls whole.
        """
        rng = random.Random("gc-crash")
        registry = RegistryProcess(self, GC_CONFIG)
        clients = [_Client(n, "crash/app" if n < 2 else "crash/tools", rng)
                   for n in range(CLIENTS)]
        for crashRound in range(GC_CRASH_ROUNDS):
            await registry.start()
            await assertPullsWhole(self, registry, [i for c in clients for i in c.committed])
            before = sum(len(c.committed) + len(c.untagged) for c in clients)
            running = [ensureDeferred(c.run(registry)) for c in clients]
            await waitUntil(
                lambda: sum(len(c.committed) + len(c.untagged) for c in clients) > before,
                timeout=60, message=f"round {crashRound}: nothing pushed",
            )
            await deferLater(reactor, rng.uniform(0.2, 2.0))
            registry.kill()
            for success, result in await DeferredList(running, consumeErrors=True):
                if not success:
                    result.raiseException()
            self.assertEqual(await deferToScrub(registry.root), [])
        await registry.start()
        await assertPullsWhole(self, registry, [i for c in clients for i in c.committed])
        self.assertEqual(await deferToScrub(registry.root), [])
        # The server's collector ran meanwhile: untagged images go once old.
        untagged = [i for c in clients for i in c.untagged]
        self.assertTrue(untagged)

        async def untaggedLeft() -> int:
            left = 0
            for image in untagged:
                response = await request(
                    registry, "HEAD", f"{registry.url}/v2/{image.repo}/manifests/{image.digest}"
                )
                await content(response)
                left += response.code == 200
            return left

        deadline = time.monotonic() + GC_DELAY + 20
        while await untaggedLeft() and time.monotonic() < deadline:
            await deferLater(reactor, 0.3)
        self.assertEqual(await untaggedLeft(), 0)
