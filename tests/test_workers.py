"""
Tests for C{http.workers}: several processes serving one port and one root.

Each test runs the real server (C{twistd zot}) with two workers and sends
every request on a new connection, so the kernel spreads them over both
processes; what one worker wrote must be what the other answers.
"""

import os
import signal
from dataclasses import dataclass

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.apihelpers import body, digestOf, jsonBody, pushBlob, pushImage, resolve
from tests.procsupport import RegistryProcess


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _cpuTicks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclass
class _Client:
    """
    What the API helpers need: a base URL and a client whose every request
    opens a new connection.
    """

    url: str
    client: HTTPClient


async def _waitFor(predicate, timeout: float = 15.0):
    for _ in range(int(timeout / 0.1)):
        value = predicate()
        if value:
            return value
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("condition not reached in time")


class WorkersTests(TestCase):
    """
    Two worker processes behave as one registry.
    """

    timeout = 120

    async def setUp(self):
        self.server = RegistryProcess(self, {"http": {"workers": 2}})
        await self.server.start()
        self.worker = (await _waitFor(lambda: _children(self.server.pid)))[0]
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.reg = _Client(self.server.url, HTTPClient(Agent(reactor, pool=pool)))

    async def test_bothProcessesServe(self):
        """
        Requests on new connections are answered by both processes (each
        gains CPU time while they run), and the answers agree.
        """
        before = (_cpuTicks(self.server.pid), _cpuTicks(self.worker))
        digest = await pushBlob(self.reg, "spread/blob", os.urandom(4096))
        for _ in range(300):
            resp = await self.reg.client.head(f"{self.reg.url}/v2/spread/blob/blobs/{digest}")
            self.assertEqual(resp.code, 200)
        after = (_cpuTicks(self.server.pid), _cpuTicks(self.worker))
        self.assertGreater(after[0], before[0])
        self.assertGreater(after[1], before[1])

    async def test_concurrentTagsAndCatalog(self):
        """
        Eight clients push different tags to one repository and eight more
        create repositories, all at once across both workers: every tag is
        listed and every repository is in the catalog, whichever process
        answers.
        """
        pushes = [pushImage(self.reg, "shared/app", f"t{i}", f"seed-{i}") for i in range(8)]
        pushes += [pushImage(self.reg, f"many/r{i}", "v1", f"r-{i}") for i in range(8)]
        await defer.gatherResults([defer.ensureDeferred(p) for p in pushes])
        expectedRepos = sorted(["shared/app"] + [f"many/r{i}" for i in range(8)])
        for _ in range(6):
            resp = await self.reg.client.get(f"{self.reg.url}/v2/shared/app/tags/list")
            tags = await jsonBody(resp)
            self.assertEqual(tags["tags"], sorted(f"t{i}" for i in range(8)))
            catalog = await jsonBody(await self.reg.client.get(f"{self.reg.url}/v2/_catalog"))
            self.assertEqual(catalog["repositories"], expectedRepos)

    async def test_changesVisibleThroughEitherWorker(self):
        """
        A tag pushed through one worker is answered, with its digest, by
        every request that follows, whichever worker takes it; a tag
        deleted, then the manifest deleted by digest, are gone for every
        request that follows.  Both processes answered (each gained CPU
        time).
        """
        before = (_cpuTicks(self.server.pid), _cpuTicks(self.worker))

        async def manifestStatus(reference: str) -> tuple:
            resp = await self.reg.client.get(
                f"{self.reg.url}/v2/seen/app/manifests/{reference}",
                headers={"Accept": ["application/vnd.oci.image.manifest.v1+json"]},
            )
            await body(resp)
            digest = resp.headers.getRawHeaders(b"Docker-Content-Digest", [b""])[0]
            return resp.code, digest.decode()

        images = []
        for n in range(6):
            image = await pushImage(self.reg, "seen/app", f"t{n}", f"seen-{n}")
            images.append(image)
            for _ in range(15):
                self.assertEqual(await manifestStatus(f"t{n}"), (200, image.digest))
        resp = await self.reg.client.delete(f"{self.reg.url}/v2/seen/app/manifests/t0")
        self.assertEqual(resp.code, 202, await body(resp))
        for _ in range(20):
            self.assertEqual((await manifestStatus("t0"))[0], 404)
            self.assertEqual(await manifestStatus(images[0].digest), (200, images[0].digest))
        resp = await self.reg.client.delete(
            f"{self.reg.url}/v2/seen/app/manifests/{images[1].digest}"
        )
        self.assertEqual(resp.code, 202, await body(resp))
        for _ in range(20):
            self.assertEqual((await manifestStatus(images[1].digest))[0], 404)
            self.assertEqual((await manifestStatus("t1"))[0], 404)
        tags = await jsonBody(await self.reg.client.get(f"{self.reg.url}/v2/seen/app/tags/list"))
        self.assertEqual(tags["tags"], [f"t{n}" for n in range(2, 6)])
        after = (_cpuTicks(self.server.pid), _cpuTicks(self.worker))
        self.assertGreater(after[0], before[0])
        self.assertGreater(after[1], before[1])

    async def test_chunkedUploadAcrossWorkers(self):
        """
        A chunked upload whose PATCH requests arrive on new connections (so
        on either worker) completes with the right digest.
        """
        data = os.urandom(5 * 1024 * 1024 + 3)
        digest = digestOf(data)
        resp = await self.reg.client.post(f"{self.reg.url}/v2/chunks/x/blobs/uploads/")
        self.assertEqual(resp.code, 202)
        location = resolve(self.reg, resp.headers.getRawHeaders(b"Location")[0].decode())
        step = 512 * 1024
        for start in range(0, len(data), step):
            chunk = data[start:start + step]
            resp = await self.reg.client.patch(
                location,
                data=chunk,
                headers={
                    "Content-Type": ["application/octet-stream"],
                    "Content-Range": [f"{start}-{start + len(chunk) - 1}"],
                },
            )
            self.assertEqual(resp.code, 202, await body(resp))
            location = resolve(self.reg, resp.headers.getRawHeaders(b"Location")[0].decode())
        sep = "&" if "?" in location else "?"
        resp = await self.reg.client.put(f"{location}{sep}digest={digest}")
        self.assertEqual(resp.code, 201, await body(resp))
        resp = await self.reg.client.get(f"{self.reg.url}/v2/chunks/x/blobs/{digest}")
        self.assertEqual(await body(resp), data)

    async def test_deadWorkerIsReplaced(self):
        """
        A worker killed with SIGKILL is started again, and the registry keeps
        answering meanwhile; stopping the registry stops the workers.
        """
        os.kill(self.worker, signal.SIGKILL)
        replacement = await _waitFor(
            lambda: [p for p in _children(self.server.pid) if p != self.worker]
        )
        resp = await self.reg.client.get(f"{self.reg.url}/v2/")
        self.assertEqual(resp.code, 200)
        await self.server.stop()
        await _waitFor(lambda: not os.path.exists(f"/proc/{replacement[0]}"))


class OrphanTests(TestCase):
    """
    A worker whose parent is already gone when it starts leaves at once,
    instead of serving a port nobody will stop it on.
    """

    def test_exitsWhenParentGone(self):
        """
        Started with a C{--parent} that is not its parent, the worker exits
        with status 1 before building anything.
        """
        import subprocess
        import sys

        result = subprocess.run(
            [sys.executable, "-m", "zotwist.worker", "--config", "/nonexistent.json",
             "--fd", "3", "--parent", "1"],
            env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, b"")
