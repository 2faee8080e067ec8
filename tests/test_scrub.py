"""
Tests for L{zotwist.storage.scrub}, the C{zot scrub} and C{zot gc}
commands, and the scrub service of a running registry.
"""

import io
import json
import os
import time
from contextlib import redirect_stderr, redirect_stdout

from treq import content
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from tests.apihelpers import pushBlob, pushImage, sleep, status
from tests.procsupport import freePort
from tests.support import startRegistry
from tests.test_gc import GCCase, age
from zotwist import cli, oci
from zotwist.storage.scrub import (
    _Throttle,
    scrubRepositoryBlocking,
    scrubRootBlocking,
)


def flipByte(path: str, offset: int = 0) -> None:
    """
    Corrupt the file at C{path} in place: same size, one byte changed.
    """
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


class ScrubTests(GCCase):
    """
    The checks, on a store written through L{LocalStore}.
    """

    def test_cleanStore(self):
        """
        A store written by the registry passes.
        """
        self.pushImage(self.repo, "1.0")
        self.pushImage("other", None, layers=(b"x",))
        self.pushBlob(self.repo, b"unreferenced is not damage")
        self.assertEqual(scrubRootBlocking(self.root), [])

    def test_corruptBlobMovedAside(self):
        """
        A layer with a flipped byte is reported and moved into C{.corrupt/}:
        the store answers as if it were missing, the image is reported
        incomplete, and a re-push repairs it.
        """
        _, digest = self.pushImage(self.repo, "1.0", layers=(b"precious layer",))
        layer = oci.digestOf(b"precious layer")
        flipByte(self.blobPath(layer))
        problems = scrubRootBlocking(self.root)
        self.assertEqual(
            sorted((p.kind, p.digest) for p in problems),
            [("corrupt-blob", layer), ("missing-reference", layer)],
        )
        self.assertIn("moved to .corrupt/", str(problems[0]) + str(problems[1]))
        self.assertIsNone(self.result(self.store.statBlob(self.repo, layer)))
        self.registryFailure(self.store.openBlob(self.repo, layer), "BLOB_UNKNOWN")
        aside = os.listdir(os.path.join(self.root, "team", "app", ".corrupt"))
        self.assertEqual(len(aside), 1)
        self.assertTrue(aside[0].startswith(layer.replace(":", "-")))
        self.pushBlob(self.repo, b"precious layer")
        self.assertEqual(scrubRootBlocking(self.root), [])

    def test_reportOnly(self):
        """
        With C{repair=False} damage is reported and left in place.
        """
        self.pushImage(self.repo, "1.0", layers=(b"layer",))
        path = self.blobPath(oci.digestOf(b"layer"))
        flipByte(path)
        problems = scrubRepositoryBlocking(self.root, self.repo, repair=False)
        self.assertEqual([p.kind for p in problems], ["corrupt-blob"])
        self.assertTrue(os.path.exists(path))

    def test_manifestProblems(self):
        """
        A missing manifest, an invalid one, and a manifest whose blob is
        missing are each reported.
        """
        _, missing = self.pushImage(self.repo, "gone", layers=(b"1",), config=b"{1}")
        self.pushImage(self.repo, "broken", layers=(b"2",), config=b"{2}")
        os.unlink(self.blobPath(missing))
        os.unlink(self.blobPath(oci.digestOf(b"2")))
        invalid = b'{"schemaVersion": 1}'
        self.pushBlob(self.repo, invalid)
        index = os.path.join(self.root, "team", "app", "index.json")
        with open(index) as f:
            document = json.load(f)
        document["manifests"].append(
            {"mediaType": oci.OCI_MANIFEST, "digest": oci.digestOf(invalid), "size": 20}
        )
        with open(index, "w") as f:
            json.dump(document, f)
        kinds = sorted((p.kind, p.digest) for p in scrubRootBlocking(self.root))
        self.assertEqual(
            kinds,
            sorted([
                ("missing-manifest", missing),
                ("missing-reference", oci.digestOf(b"2")),
                ("invalid-manifest", oci.digestOf(invalid)),
            ]),
        )

    def test_corruptManifest(self):
        """
        Flipped manifest bytes are corrupt, and the manifest is then missing.
        """
        _, digest = self.pushImage(self.repo, "1.0")
        flipByte(self.blobPath(digest), 5)
        kinds = sorted(p.kind for p in scrubRootBlocking(self.root))
        self.assertEqual(kinds, ["corrupt-blob", "missing-manifest"])

    def test_throttle(self):
        """
        The throttle sleeps so that the bytes hashed stay under the rate.
        """
        now = [0.0]
        slept = []

        def sleep(seconds):
            slept.append(seconds)
            now[0] += seconds

        throttle = _Throttle(100.0, sleep=sleep, clock=lambda: now[0])
        throttle.consumed(50)
        throttle.consumed(150)
        self.assertEqual(slept, [0.5, 1.5])
        unlimited = _Throttle(None, sleep=sleep)
        unlimited.consumed(10**9)
        self.assertEqual(len(slept), 2)


class CommandTests(GCCase):
    """
    C{zot scrub} and C{zot gc} against a stopped registry's root.
    """

    def setUp(self):
        super().setUp()
        self.config = os.path.join(self.parent, "config.json")
        with open(self.config, "w") as f:
            json.dump({
                "storage": {"rootDirectory": self.root, "gcDelay": "1h"},
                "http": {"address": "127.0.0.1", "port": str(freePort())},
            }, f)

    def zot(self, *argv: str):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_scrubExitStatus(self):
        """
        C{zot scrub} exits 0 on a sound root and 1, listing the damage, on a
        damaged one.
        """
        self.pushImage("team/app", "1.0", layers=(b"layer",))
        self.assertEqual(self.zot("scrub", self.config), (0, f"{self.root}: ok\n", ""))
        flipByte(self.blobPath(oci.digestOf(b"layer")))
        code, out, err = self.zot("scrub", self.config)
        self.assertEqual(code, 1)
        self.assertIn("team/app: corrupt-blob " + oci.digestOf(b"layer"), out)
        self.assertIn("scrub found 2 problems", err)

    def test_refusesWhileServing(self):
        """
        Both commands refuse when something answers on the configured port,
        unless forced.
        """
        with open(self.config) as f:
            port = int(json.load(f)["http"]["port"])
        listening = reactor.listenTCP(port, Factory(), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        for command in ("scrub", "gc"):
            code, _, err = self.zot(command, self.config)
            self.assertEqual(code, 1)
            self.assertIn("stop the registry first", err)
        self.assertEqual(self.zot("gc", "--force", self.config)[0], 0)

    def test_gc(self):
        """
        C{zot gc CONFIG} collects with the config's delay; C{zot gc ROOT
        --delay} with the given one.
        """
        stray = self.pushBlob("team/app", b"stray")
        code, out, _ = self.zot("gc", self.config)
        self.assertEqual((code, out), (0, f"{self.root}: removed 0 manifests, 0 blobs "
                                          "(0 bytes), 0 stale uploads\n"))
        age(self.blobPath(stray, "team/app"), 60)
        code, out, _ = self.zot("gc", self.root, "--delay", "30s")
        self.assertEqual(code, 0)
        self.assertIn("removed 0 manifests, 1 blobs (5 bytes)", out)
        self.assertEqual(self.zot("gc", self.root, "--delay", "soon")[0], 2)


class RunningScrubTests(TestCase):
    """
    The scrub and the collector inside a running registry.
    """

    async def test_scrubServiceRepairs(self):
        """
        With C{extensions.scrub} on, a corrupted layer is found within an
        interval and 404s; a re-push of the blob repairs the image.
        """
        reg = await startRegistry(
            self, {"extensions": {"scrub": {"interval": "200ms"}, "metrics": {"enable": True}}}
        )
        image = await pushImage(reg, "team/app", "1.0", "scrubbed")
        layer = oci.digestOf(image.layers[0])
        path = os.path.join(reg.root, "team", "app", "blobs", "sha256", layer.split(":")[1])
        scrub = reg.service.getServiceNamed("scrub")
        rounds = scrub.rounds
        flipByte(path)
        url = f"{reg.url}/v2/team/app/blobs/{layer}"
        deadline = time.monotonic() + 10
        while scrub.rounds < rounds + 2 and time.monotonic() < deadline:
            await sleep(0.1)
        self.assertEqual(await status(reg, "HEAD", url), 404)
        self.assertEqual(await status(reg, "GET", url), 404)
        # The round that moved it aside reported it corrupt; later rounds
        # find the image missing that layer.
        self.assertIn(("missing-reference", layer), [(p.kind, p.digest) for p in scrub.problems])
        self.assertEqual(len(os.listdir(os.path.join(reg.root, "team", "app", ".corrupt"))), 1)
        metrics = (await content(await reg.client.get(f"{reg.url}/metrics"))).decode()
        self.assertIn('zot_scrub_problems{kind="missing-reference"} 1.0', metrics)
        self.assertIn('zot_scrub_problems{kind="invalid-index"} 0.0', metrics)
        await pushBlob(reg, "team/app", image.layers[0])
        resp = await reg.client.get(url)
        self.assertEqual(oci.digestOf(await content(resp)), layer)
        self.assertEqual(scrubRootBlocking(reg.root), [])

    async def test_gcServiceCollects(self):
        """
        With a tiny C{gcDelay} and C{gcInterval}, an unreferenced blob is
        gone soon after its delay; the image stays whole.
        """
        reg = await startRegistry(
            self,
            {
                "storage": {"gcDelay": "300ms", "gcInterval": "100ms"},
                "extensions": {"metrics": {"enable": True}},
            },
        )
        image = await pushImage(reg, "team/app", "1.0", "collected")
        stray = await pushBlob(reg, "team/app", b"stray blob")
        url = f"{reg.url}/v2/team/app/blobs/{stray}"
        await sleep(1.0)
        self.assertEqual(await status(reg, "HEAD", url), 404)
        for blob in [image.config, *image.layers]:
            self.assertEqual(
                await status(reg, "HEAD", f"{reg.url}/v2/team/app/blobs/{oci.digestOf(blob)}"),
                200,
            )
        self.assertEqual(
            await status(reg, "GET", f"{reg.url}/v2/team/app/manifests/1.0"), 200
        )
        metrics = (await content(await reg.client.get(f"{reg.url}/metrics"))).decode()
        self.assertIn('zot_gc_removed_total{kind="blobs"} 1.0', metrics)
        self.assertIn(f"zot_gc_removed_bytes_total {len(b'stray blob')}.0", metrics)

