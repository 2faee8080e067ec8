"""
Interoperability with the real C{skopeo} (and C{umoci}) command-line tools.

Each test starts the registry in-process on a loopback port with
L{tests.support.startRegistry}, builds a test image as an OCI layout with
L{tests.images}, and drives the real C{skopeo} binary against it. skopeo is
run with L{getProcessOutputAndValue}, so the reactor keeps serving the
registry while skopeo talks to it.

These tools are installed by C{tests/run.sh}. A missing tool is a failure,
never a skip: an interop suite that silently skips proves nothing.
"""

import hashlib
import json
import os
import shutil

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests import images
from tests.support import startRegistry

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _digestOf(data: bytes) -> str:
    """
    Return the C{sha256:<hex>} digest of C{data}.
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ToolError(Exception):
    """
    A command-line tool exited with a non-zero status.

    @ivar code: the exit status.
    @ivar stderr: what the tool wrote to standard error, decoded.
    """

    def __init__(self, argv, code, stdout, stderr):
        self.argv = argv
        self.code = code
        self.stdout = stdout.decode("utf-8", "replace")
        self.stderr = stderr.decode("utf-8", "replace")
        Exception.__init__(self, f"{' '.join(argv)} exited {code}:\n{self.stderr}{self.stdout}")


class SkopeoInteropTests(unittest.TestCase):
    """
    Push, pull, inspect, list and delete with the real skopeo against a
    registry served by this process.
    """

    # skopeo copies a few MiB per test; leave headroom on a loaded CI box.
    timeout = 300

    def setUp(self):
        """
        Find the tools and give each test a private HOME and TMPDIR, so no
        auth file or registries.conf of the machine's user leaks in.
        """
        self.tools = {}
        for name in ("skopeo", "umoci"):
            found = shutil.which(name)
            if found is None:
                self.fail(
                    f"{name} is not installed (not on PATH): the interop tests need it; "
                    "run `bash tests/run.sh`, which installs skopeo and umoci with apt-get"
                )
            self.tools[name] = found
        self.work = os.path.abspath(self.mktemp())
        home = os.path.join(self.work, "home")
        tmp = os.path.join(self.work, "tmp")
        os.makedirs(home)
        os.makedirs(tmp)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": home,
            "TMPDIR": tmp,
        }

    async def runTool(self, tool, *args):
        """
        Run C{tool} with C{args} without blocking the reactor.

        @return: its standard output (bytes).
        @raise ToolError: if it exits with a non-zero status.
        """
        argv = [self.tools[tool], *args]
        out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=self.env)
        if code != 0:
            raise ToolError(argv, code, out, err)
        return out

    async def skopeo(self, *args):
        """
        Run C{skopeo --insecure-policy ARGS}: signature policy is not what
        these tests are about, and the machine's policy.json may be absent.
        """
        return await self.runTool("skopeo", "--insecure-policy", *args)

    async def startRegistry(self):
        """
        Start the registry under test and remember its C{host:port}.
        """
        registry = await startRegistry(self)
        self.host = registry.url.split("://", 1)[1]
        return registry

    def layout(self, name):
        """
        Return the path of a fresh OCI layout directory for this test.
        """
        return os.path.join(self.work, name)

    def assertSameBlobs(self, sourceLayout, copyLayout, manifestDigest):
        """
        Assert that the manifest C{manifestDigest}, its config and every
        layer are byte-identical in both layouts.
        """
        manifestBytes = images.readBlob(sourceLayout, manifestDigest)
        self.assertEqual(images.readBlob(copyLayout, manifestDigest), manifestBytes)
        manifest = json.loads(manifestBytes)
        for descriptor in [manifest["config"], *manifest["layers"]]:
            data = images.readBlob(copyLayout, descriptor["digest"])
            self.assertEqual(_digestOf(data), descriptor["digest"])
            self.assertEqual(data, images.readBlob(sourceLayout, descriptor["digest"]))

    async def test_multiLayerRoundTrip(self):
        """
        A three-layer image copied from an OCI layout to the registry and
        back into another OCI layout keeps its manifest digest, and every
        blob comes back byte for byte; C{skopeo inspect} of the registry
        copy reports the same digest and layers.
        """
        await self.startRegistry()
        source = self.layout("source")
        digest = images.buildImage(source, "v1", layers=3, layerSize=1024 * 1024, seed=1)
        remote = f"docker://{self.host}/interop/roundtrip:v1"

        await self.skopeo(
            "copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{source}:v1", remote
        )
        inspected = json.loads(await self.skopeo("inspect", "--tls-verify=false", remote))
        manifest = images.readJSONBlob(source, digest)
        self.assertEqual(inspected["Digest"], digest)
        self.assertEqual(inspected["Layers"], [layer["digest"] for layer in manifest["layers"]])
        self.assertEqual((inspected["Os"], inspected["Architecture"]), ("linux", "amd64"))

        copy = self.layout("copy")
        await self.skopeo(
            "copy", "--preserve-digests", "--src-tls-verify=false", remote, f"oci:{copy}:v1"
        )
        self.assertEqual(images.taggedDescriptor(copy, "v1")["digest"], digest)
        self.assertSameBlobs(source, copy, digest)

    async def test_multiPlatformIndex(self):
        """
        C{skopeo copy --all} of a two-platform image index keeps the index
        digest; the registry serves the index bytes unchanged, each platform
        resolves to its own child manifest and can be pulled by digest, and
        the whole index copies back intact.
        """
        await self.startRegistry()
        source = self.layout("source")
        platforms = [("linux", "amd64"), ("linux", "arm64")]
        indexDigest = images.buildIndex(source, "multi", platforms=platforms, seed=2)
        remote = f"docker://{self.host}/interop/multi"

        await self.skopeo(
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{source}:multi",
            f"{remote}:multi",
        )
        raw = await self.skopeo("inspect", "--raw", "--tls-verify=false", f"{remote}:multi")
        self.assertEqual(_digestOf(raw), indexDigest)
        index = json.loads(raw)
        self.assertEqual(index["mediaType"], images.MEDIA_TYPE_INDEX)
        children = {
            (child["platform"]["os"], child["platform"]["architecture"]): child["digest"]
            for child in index["manifests"]
        }
        self.assertEqual(sorted(children), sorted(platforms))

        for (osName, architecture), childDigest in sorted(children.items()):
            inspected = json.loads(
                await self.skopeo(
                    "inspect",
                    "--tls-verify=false",
                    "--override-os",
                    osName,
                    "--override-arch",
                    architecture,
                    f"{remote}:multi",
                )
            )
            # skopeo reports the digest of the tagged manifest (the index)
            # but the platform, layers and config of the chosen child.
            self.assertEqual(inspected["Digest"], indexDigest)
            self.assertEqual((inspected["Os"], inspected["Architecture"]), (osName, architecture))
            childManifest = images.readJSONBlob(source, childDigest)
            self.assertEqual(
                inspected["Layers"], [layer["digest"] for layer in childManifest["layers"]]
            )
            single = self.layout(f"single-{architecture}")
            await self.skopeo(
                "copy",
                "--preserve-digests",
                "--src-tls-verify=false",
                f"{remote}@{childDigest}",
                f"oci:{single}:{architecture}",
            )
            self.assertEqual(images.taggedDescriptor(single, architecture)["digest"], childDigest)
            self.assertSameBlobs(source, single, childDigest)

        copy = self.layout("copy")
        await self.skopeo(
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            f"{remote}:multi",
            f"oci:{copy}:multi",
        )
        self.assertEqual(images.taggedDescriptor(copy, "multi")["digest"], indexDigest)
        for childDigest in children.values():
            self.assertSameBlobs(source, copy, childDigest)

    async def test_dockerSchema2(self):
        """
        An image pushed with C{--format v2s2} is stored and served as a
        Docker schema 2 manifest (its own media type, Docker config and layer
        types, digest matching the served bytes), and copies back out both
        as that exact manifest and converted to an OCI layout with the same
        layer blobs.
        """
        await self.startRegistry()
        source = self.layout("source")
        ociDigest = images.buildImage(source, "v1", layers=2, layerSize=128 * 1024, seed=3)
        remote = f"docker://{self.host}/interop/docker:v1"

        await self.skopeo(
            "copy", "--format", "v2s2", "--dest-tls-verify=false", f"oci:{source}:v1", remote
        )
        raw = await self.skopeo("inspect", "--raw", "--tls-verify=false", remote)
        manifest = json.loads(raw)
        self.assertEqual(manifest["schemaVersion"], 2)
        self.assertEqual(manifest["mediaType"], DOCKER_MANIFEST_V2)
        self.assertEqual(manifest["config"]["mediaType"], DOCKER_CONFIG)
        self.assertEqual({layer["mediaType"] for layer in manifest["layers"]}, {DOCKER_LAYER_GZIP})
        ociManifest = images.readJSONBlob(source, ociDigest)
        self.assertEqual(
            [layer["digest"] for layer in manifest["layers"]],
            [layer["digest"] for layer in ociManifest["layers"]],
        )
        dockerDigest = _digestOf(raw)
        inspected = json.loads(await self.skopeo("inspect", "--tls-verify=false", remote))
        self.assertEqual(inspected["Digest"], dockerDigest)

        # A dir: destination keeps the manifest exactly as served.
        directory = self.layout("dir")
        await self.skopeo("copy", "--src-tls-verify=false", remote, f"dir:{directory}")
        with open(os.path.join(directory, "manifest.json"), "rb") as f:
            self.assertEqual(_digestOf(f.read()), dockerDigest)

        # Pulling by digest works too, and an OCI destination gets the same layers.
        copy = self.layout("copy")
        await self.skopeo(
            "copy",
            "--src-tls-verify=false",
            f"docker://{self.host}/interop/docker@{dockerDigest}",
            f"oci:{copy}:v1",
        )
        copied = images.readJSONBlob(copy, images.taggedDescriptor(copy, "v1")["digest"])
        self.assertEqual(copied["mediaType"], images.MEDIA_TYPE_MANIFEST)
        for layer in ociManifest["layers"]:
            self.assertEqual(
                images.readBlob(copy, layer["digest"]), images.readBlob(source, layer["digest"])
            )

    async def test_storageIsAnOCILayout(self):
        """
        The registry's storage for a repository is itself an OCI image
        layout: C{skopeo inspect oci:ROOT/REPO:TAG} and C{umoci ls} read it
        directly and agree with what was pushed, and skopeo can copy an image
        straight out of it.
        """
        registry = await self.startRegistry()
        source = self.layout("source")
        first = images.buildImage(source, "v1", layers=3, layerSize=64 * 1024, seed=4)
        second = images.buildImage(source, "v2", layers=1, layerSize=32 * 1024, seed=5)
        for tag in ("v1", "v2"):
            await self.skopeo(
                "copy",
                "--preserve-digests",
                "--dest-tls-verify=false",
                f"oci:{source}:{tag}",
                f"docker://{self.host}/interop/direct:{tag}",
            )

        storage = os.path.join(registry.root, "interop", "direct")
        self.assertTrue(
            os.path.isfile(os.path.join(storage, "oci-layout")),
            f"no oci-layout file in {storage}",
        )
        for tag, digest in (("v1", first), ("v2", second)):
            inspected = json.loads(await self.skopeo("inspect", f"oci:{storage}:{tag}"))
            manifest = images.readJSONBlob(source, digest)
            self.assertEqual(inspected["Digest"], digest)
            self.assertEqual(
                inspected["Layers"], [layer["digest"] for layer in manifest["layers"]]
            )

        listed = (await self.runTool("umoci", "ls", "--layout", storage)).decode().split()
        self.assertEqual(sorted(listed), ["v1", "v2"])
        stat = (await self.runTool("umoci", "stat", "--image", f"{storage}:v1")).decode()
        for layer in images.readJSONBlob(source, first)["layers"]:
            self.assertIn(layer["digest"], stat)

        copy = self.layout("copy")
        await self.skopeo("copy", "--preserve-digests", f"oci:{storage}:v1", f"oci:{copy}:v1")
        self.assertSameBlobs(source, copy, first)

    async def test_listTagsAndDeleteByTag(self):
        """
        C{skopeo list-tags} lists every pushed tag; C{skopeo delete} of one
        tag removes that image (and only it) from the listing and from
        pulls, while the other tags stay pullable.
        """
        await self.startRegistry()
        source = self.layout("source")
        digests = {}
        for seed, tag in enumerate(("v1", "v2", "v3")):
            digests[tag] = images.buildImage(
                source, tag, layers=1, layerSize=8 * 1024, seed=10 + seed
            )
        repository = f"docker://{self.host}/interop/tags"
        for tag in digests:
            await self.skopeo(
                "copy", "--dest-tls-verify=false", f"oci:{source}:{tag}", f"{repository}:{tag}"
            )

        listing = json.loads(await self.skopeo("list-tags", "--tls-verify=false", repository))
        self.assertEqual(sorted(listing["Tags"]), ["v1", "v2", "v3"])

        await self.skopeo("delete", "--tls-verify=false", f"{repository}:v2")

        listing = json.loads(await self.skopeo("list-tags", "--tls-verify=false", repository))
        self.assertEqual(sorted(listing["Tags"]), ["v1", "v3"])
        with self.assertRaises(ToolError) as caught:
            await self.skopeo("inspect", "--tls-verify=false", f"{repository}:v2")
        self.assertIn("manifest unknown", caught.exception.stderr.lower())
        with self.assertRaises(ToolError):
            await self.skopeo(
                "inspect", "--raw", "--tls-verify=false", f"{repository}@{digests['v2']}"
            )
        for tag in ("v1", "v3"):
            inspected = json.loads(
                await self.skopeo("inspect", "--tls-verify=false", f"{repository}:{tag}")
            )
            self.assertEqual(inspected["Digest"], digests[tag])
