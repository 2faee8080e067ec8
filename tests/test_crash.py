"""
Crash safety: the registry killed with C{SIGKILL} in the middle of work,
stopped and restarted, or abandoned by its clients mid-upload.

The server (a real process, L{tests.procsupport.RegistryProcess}) promises
that storage stays consistent whatever happens to it:

    - every file named C{blobs/<alg>/<hex>} holds content hashing to that
      name, because a blob appears under its digest only by renaming a
      verified file;
    - every C{index.json} parses, and names only manifests that are there;
    - what a client was told is stored (a 201) survives the crash;
    - upload sessions survive restarts and can be resumed from the offset
      the server reports;
    - an upload that never completed leaves nothing visible.

L{assertStorageConsistent} walks the storage root and checks the first two
points; it runs right after each kill (before any restart could repair
anything) and again after the restart.
"""

import hashlib
import json
import os
import random
import re
import signal
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import FailTest, TestCase

from tests.images import MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST
from tests.procsupport import (
    NETWORK_ERRORS,
    OCTET_STREAM,
    MiB,
    PatternBlob,
    RegistryProcess,
    StreamingBody,
    expect,
    filesUnder,
    finishUpload,
    header,
    parseRange,
    patchChunk,
    pullDigest,
    pushMonolithic,
    pushSinglePost,
    request,
    resolve,
    sha256Digest,
    splitBytes,
    startUpload,
    storedSince,
    waitUntil,
    withQuery,
)

#: Kill/restart cycles of the concurrent-push test.  Reduced for the suite
#: (each round costs a server start, about 1-2 s, plus pushing and pulling);
#: raise it locally to hunt for rarer interleavings.
CRASH_ROUNDS = 5

#: Concurrent pushers in the concurrent-push test.
PUSHERS = 3

_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}

_log = Logger()


def assertStorageConsistent(testCase: TestCase, root: str) -> tuple[list[str], int]:
    """
    Walk the storage root and fail C{testCase} on any inconsistency.

    Checked: every file whose name is an encoded digest in a
    C{blobs/<alg>/} directory hashes to that name (other names there, such
    as a server's hidden temporary files, are not blobs and are left
    alone); every C{index.json} and C{oci-layout} anywhere parses as JSON;
    in a repository (a directory with C{oci-layout}), every manifest
    C{index.json} names is a blob of that repository, and so are the
    config, layers and children of those manifests.

    @return: the repositories found (paths relative to C{root}) and how many
        blob files were verified, so that callers can tell a real check from
        a walk that found nothing.
    """
    problems = []
    verified = 0
    repositories = []
    for directory, _, names in os.walk(root):
        parent, algorithm = os.path.split(directory)
        if os.path.basename(parent) == "blobs" and algorithm in _DIGEST_LENGTHS:
            pattern = re.compile(f"[0-9a-f]{{{_DIGEST_LENGTHS[algorithm]}}}")
            for name in names:
                if not pattern.fullmatch(name):
                    continue
                hasher = hashlib.new(algorithm)
                with open(os.path.join(directory, name), "rb") as f:
                    while data := f.read(4 * MiB):
                        hasher.update(data)
                verified += 1
                if hasher.hexdigest() != name:
                    problems.append(
                        f"{os.path.join(directory, name)} hashes to {hasher.hexdigest()}"
                    )
        for name in names:
            if name in ("index.json", "oci-layout"):
                path = os.path.join(directory, name)
                try:
                    with open(path, "rb") as f:
                        json.load(f)
                except ValueError as e:
                    problems.append(f"{path} does not parse as JSON: {e}")
        if "oci-layout" in names and "index.json" in names:
            repositories.append(directory)
    for repository in repositories:
        problems.extend(_referencesMissing(repository))
    if problems:
        raise testCase.failureException("storage is inconsistent:\n" + "\n".join(problems[:50]))
    return sorted(os.path.relpath(path, root) for path in repositories), verified


def _referencesMissing(repository: str) -> list[str]:
    """
    Return a description of every manifest, config, layer or child that the
    C{index.json} of C{repository} (directly or through a manifest) names
    but that is not a blob of the repository.
    """

    def blobFile(digest: str) -> str:
        algorithm, _, encoded = digest.partition(":")
        return os.path.join(repository, "blobs", algorithm, encoded)

    try:
        with open(os.path.join(repository, "index.json"), "rb") as f:
            index = json.load(f)
    except ValueError:
        return []  # already reported
    problems = []
    pending = [(d.get("digest", ""), "index.json") for d in index.get("manifests", [])]
    seen = set()
    while pending:
        digest, referrer = pending.pop()
        if digest in seen:
            continue
        seen.add(digest)
        path = blobFile(digest)
        if not os.path.isfile(path):
            problems.append(f"{repository}: {referrer} names {digest}, which is missing")
            continue
        if referrer != "index.json":
            continue
        try:
            with open(path, "rb") as f:
                manifest = json.load(f)
        except ValueError:
            continue  # not a manifest we can read; nothing more to follow
        children = list(manifest.get("layers", [])) + list(manifest.get("manifests", []))
        if isinstance(manifest.get("config"), dict):
            children.append(manifest["config"])
        for child in children:
            if isinstance(child, dict) and isinstance(child.get("digest"), str):
                pending.append((child["digest"], f"manifest {digest}"))
    return problems


def blobFileOf(root: str, repo: str, digest: str) -> str:
    """
    The path blob C{digest} of C{repo} has in the promised layout.
    """
    algorithm, _, encoded = digest.partition(":")
    return os.path.join(root, *repo.split("/"), "blobs", algorithm, encoded)


async def headBlob(registry, repo: str, digest: str) -> int:
    """
    Return the status of C{HEAD /v2/<repo>/blobs/<digest>}.
    """
    response = await request(registry, "HEAD", f"{registry.url}/v2/{repo}/blobs/{digest}")
    await expect(response, response.code, "HEAD")
    return response.code


class _RawClient(Protocol):
    """
    A client that writes whatever the test tells it, so that it can stop in
    the middle of a request body and close or reset the connection.
    """

    def __init__(self) -> None:
        """
        Nothing received, not lost yet.
        """
        self.received = b""
        self.lost: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        """
        Keep whatever the server answers.
        """
        self.received += data

    def connectionLost(self, reason) -> None:
        """
        Fire L{lost}.
        """
        self.lost.callback(None)


async def sendPartialRequest(
    registry: RegistryProcess, head: str, partial: bytes, reset: bool
) -> bytes:
    """
    Send a request whose head announces more body than C{partial}, wait
    until the server has stored the part (it writes bodies to disk under the
    storage root as they arrive), then close the connection
    (C{reset}: abort it with a TCP RST instead, as a crashing client does),
    and wait until the server has closed every file it had open under an
    C{.uploads} directory: only then is the aborted request over on the
    server's side too (and a server that never closes them leaks).

    @param head: the request line and headers, without the blank line.
    @return: whatever the server answered before the connection went away.
    """
    from twisted.internet import reactor

    client = _RawClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", registry.port), client)
    before = filesUnder(registry.root)
    client.transport.write(head.encode("latin-1") + b"\r\n\r\n")
    body = StreamingBody(splitBytes(partial, MiB))
    client.transport.registerProducer(body, True)
    produced = body.startProducing(client.transport)
    try:
        await body.whenSent(len(partial))
    except ConnectionLost:
        raise FailTest(
            f"the server closed the connection early, answering {client.received[:1000]!r}"
        )
    await produced
    client.transport.unregisterProducer()
    await waitUntil(
        lambda: storedSince(registry.root, before) >= len(partial),
        timeout=20,
        message=lambda: (
            f"only {storedSince(registry.root, before)} of the {len(partial)}"
            " bytes sent reached the storage root"
        ),
    )
    if reset:
        client.transport.abortConnection()
    else:
        client.transport.loseConnection()
    await client.lost

    def uploadFilesOpen() -> list[str]:
        return [path for path in registry.openFiles(registry.root) if "/.uploads/" in path]

    await waitUntil(
        lambda: not uploadFilesOpen(),
        timeout=10,
        message=lambda: f"the server still holds the aborted upload's files: {uploadFilesOpen()}",
    )
    return client.received


class KillDuringUploadTests(TestCase):
    """
    C{SIGKILL} while a large blob is being uploaded.
    """

    async def test_killDuringMonolithicPut(self):
        """
        A server killed while 256 MiB are streaming in through a monolithic
        C{PUT ?digest=} leaves consistent storage without the blob; after a
        restart on the same root the blob is still unknown (HEAD 404), and
        pushing it again stores it (HEAD 200, right length and digest).
        """
        repo = "crash/monolithic"
        blob = PatternBlob(256 * MiB, seed=11)
        blobDigest = deferToThread(blob.digest)
        registry = RegistryProcess(self)
        await registry.start()
        digest = await blobDigest

        location = await startUpload(registry, repo)
        before = filesUnder(registry.root)
        body = StreamingBody(blob.pieces(), blob.size, delay=0.01)
        upload = ensureDeferred(
            request(
                registry,
                "PUT",
                withQuery(location, digest=digest),
                data=body,
                headers={"Content-Type": OCTET_STREAM},
            )
        )
        await waitUntil(
            lambda: storedSince(registry.root, before) >= 48 * MiB,
            timeout=60,
            message=lambda: (
                f"only {storedSince(registry.root, before)} bytes of the upload reached"
                f" the storage root after {body.sent} were sent"
            ),
        )
        self.assertFalse(upload.called, "the slow 256 MiB upload ended early")
        registry.kill()
        await self.assertFailure(upload, *NETWORK_ERRORS)

        assertStorageConsistent(self, registry.root)
        self.assertFalse(os.path.exists(blobFileOf(registry.root, repo, digest)))

        await registry.start()
        self.assertEqual(await headBlob(registry, repo, digest), 404)
        assertStorageConsistent(self, registry.root)

        await pushMonolithic(registry, repo, StreamingBody(blob.pieces(), blob.size), digest)
        response = await request(registry, "HEAD", f"{registry.url}/v2/{repo}/blobs/{digest}")
        await expect(response, 200, "HEAD after the re-push")
        self.assertEqual(header(response, "Content-Length"), str(blob.size))
        self.assertEqual(header(response, "Docker-Content-Digest"), digest)
        repositories, verified = assertStorageConsistent(self, registry.root)
        self.assertEqual((repositories, verified), ([repo], 1))

    test_killDuringMonolithicPut.timeout = 180

    async def test_killDuringPatch(self):
        """
        A server killed while a 32 MiB PATCH is streaming into a session
        that already holds a 4 MiB chunk keeps the session: after a restart
        C{GET <location>} answers 204 with C{Range: 0-<n-1>} for some C{n}
        between the 4 MiB already acknowledged and the bytes sent, and
        sending the rest from C{n} on and closing with C{PUT ?digest=}
        stores the correct blob.
        """
        repo = "crash/patch"
        blob = PatternBlob(36 * MiB + 4321, seed=12)
        digest = blob.digest()
        registry = RegistryProcess(self)
        await registry.start()

        location = await startUpload(registry, repo)
        first = 4 * MiB
        location = await patchChunk(registry, location, blob.read(0, first), 0, first)

        before = filesUnder(registry.root)
        rest = blob.size - first
        body = StreamingBody(blob.pieces(first, rest), rest, delay=0.02)
        patch = ensureDeferred(
            request(
                registry,
                "PATCH",
                location,
                data=body,
                headers={
                    "Content-Type": OCTET_STREAM,
                    "Content-Range": f"{first}-{blob.size - 1}",
                },
            )
        )
        await waitUntil(
            lambda: storedSince(registry.root, before) >= 8 * MiB,
            timeout=60,
            message=lambda: (
                f"only {storedSince(registry.root, before)} bytes of the PATCH reached"
                f" the storage root after {body.sent} were sent"
            ),
        )
        registry.kill()
        await self.assertFailure(patch, *NETWORK_ERRORS)
        sent = first + body.sent
        assertStorageConsistent(self, registry.root)

        await registry.start()
        response = await request(registry, "GET", location)
        await expect(response, 204, "upload status after the restart")
        offset = parseRange(header(response, "Range"))
        self.assertTrue(
            first <= offset <= sent,
            f"the session reports {offset} bytes; {first} were acknowledged, {sent} sent",
        )
        self.assertEqual(await headBlob(registry, repo, digest), 404)
        location = resolve(registry, header(response, "Location") or location)
        location = await patchChunk(
            registry,
            location,
            StreamingBody(blob.pieces(offset), blob.size - offset),
            offset,
            blob.size - offset,
        )
        response = await finishUpload(registry, location, digest)
        self.assertEqual(response.code, 201)
        pulled, length, _ = await pullDigest(registry, repo, digest)
        self.assertEqual((pulled, length), (digest, blob.size))
        assertStorageConsistent(self, registry.root)

    test_killDuringPatch.timeout = 120


class ResumeAfterRestartTests(TestCase):
    """
    Chunked upload sessions outlive the server process.
    """

    async def _resumeAcross(self, restart) -> None:
        """
        Upload two chunks, run C{restart(registry)}, then check the session
        status, send the last chunk from the reported offset and close the
        session.
        """
        repo = "resume/app"
        data = random.Random("resume").randbytes(12 * MiB + 141)
        digest = sha256Digest(data)
        sizes = [5 * MiB + 123, 3 * MiB + 7]
        registry = RegistryProcess(self)
        await registry.start()

        location = await startUpload(registry, repo)
        offset = 0
        for size in sizes:
            location = await patchChunk(
                registry, location, data[offset : offset + size], offset, size
            )
            offset += size

        await restart(registry)

        response = await request(registry, "GET", location)
        await expect(response, 204, "upload status after the restart")
        self.assertEqual(header(response, "Range"), f"0-{offset - 1}")
        location = resolve(registry, header(response, "Location") or location)
        self.assertEqual(await headBlob(registry, repo, digest), 404)

        location = await patchChunk(registry, location, data[offset:], offset, len(data) - offset)
        response = await finishUpload(registry, location, digest)
        self.assertEqual(response.code, 201)
        self.assertEqual(header(response, "Docker-Content-Digest"), digest)
        pulled, length, _ = await pullDigest(registry, repo, digest)
        self.assertEqual((pulled, length), (digest, len(data)))
        assertStorageConsistent(self, registry.root)

    async def test_resumeAfterKill(self):
        """
        After two acknowledged chunks (202) and a C{SIGKILL}, the restarted
        server reports the session's full length (C{GET <location>}: 204,
        C{Range: 0-<n-1>}), accepts the next chunk from there and the final
        C{PUT ?digest=} (201), and serves the whole blob intact: an
        acknowledged chunk is on disk, and the session's hash state is
        rebuilt from it.
        """

        async def kill(registry):
            registry.kill()
            assertStorageConsistent(self, registry.root)
            await registry.start()

        await self._resumeAcross(kill)

    async def test_resumeAfterGracefulRestart(self):
        """
        The same across a graceful C{SIGTERM} stop (twistd shuts its
        services down and exits with the signal) and a new start: sessions
        are not thrown away on shutdown.
        """

        async def stopAndStart(registry):
            self.assertIn(await registry.stop(), (0, -signal.SIGTERM))
            self.assertIn("Server Shut Down.", registry.log())
            await registry.start()

        await self._resumeAcross(stopAndStart)


class _Image:
    """
    One test image: a config and three layers of seeded random bytes, and
    the OCI manifest naming them.
    """

    def __init__(self, repo: str, tag: str, seed: str) -> None:
        """
        Build the image C{seed} selects, to be pushed as C{repo:tag}.
        """
        rng = random.Random(seed)
        self.repo = repo
        self.tag = tag
        sizes = [16 * 1024 + rng.randrange(4096), 256 * 1024, 2 * MiB + rng.randrange(MiB)]
        self.layers = [rng.randbytes(size) for size in sizes]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256Digest(x) for x in self.layers]},
            "config": {"Labels": {"zotwist.test.seed": seed}},
        }
        self.config = json.dumps(config, sort_keys=True).encode()
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "config": {
                    "mediaType": MEDIA_TYPE_CONFIG,
                    "digest": sha256Digest(self.config),
                    "size": len(self.config),
                },
                "layers": [
                    {
                        "mediaType": MEDIA_TYPE_LAYER_GZIP,
                        "digest": sha256Digest(layer),
                        "size": len(layer),
                    }
                    for layer in self.layers
                ],
            },
            sort_keys=True,
        ).encode()
        self.digest = sha256Digest(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        """
        The config and the layers, in upload order.
        """
        return [self.config, *self.layers]


class _Pusher:
    """
    One client pushing images in a loop until the server goes away.

    Each pusher uses one upload style, so that a kill can land in any of
    them: C{0} POST then a monolithic PUT trickled in 128 KiB pieces,
    C{1} POST then 1 MiB PATCH chunks then PUT, C{2} single C{POST
    ?digest=}.  Like real clients it skips blobs that HEAD reports present.
    An image interrupted by a kill is pushed again, whole, after the
    restart.

    @ivar committed: images whose manifest PUT returned 201.
    """

    def __init__(self, number: int, repo: str) -> None:
        """
        Pusher C{number} (which also selects its upload style) into C{repo}.
        """
        self.number = number
        self.repo = repo
        self.committed: list[_Image] = []
        self._pending: _Image | None = None
        self._count = 0
        #: What the pusher was doing last (logged after a kill).
        self.stage = "idle"

    def _nextImage(self) -> _Image:
        """
        The image interrupted last time, or a new one.
        """
        if self._pending is None:
            self._count += 1
            tag = f"c{self.number}-{self._count}"
            self._pending = _Image(self.repo, tag, f"crash/{self.number}/{self._count}")
        return self._pending

    async def run(self, registry: RegistryProcess, onCommit) -> None:
        """
        Push images until a request fails because the server is gone.
        """
        while True:
            image = self._nextImage()
            try:
                await self._push(registry, image)
            except NETWORK_ERRORS:
                return
            self.stage = f"{image.tag}: done"
            self.committed.append(image)
            self._pending = None
            onCommit()

    async def _push(self, registry: RegistryProcess, image: _Image) -> None:
        """
        Push the blobs of C{image} in this pusher's style, then its manifest.
        """
        for number, blob in enumerate(image.blobs):
            digest = sha256Digest(blob)
            self.stage = f"{image.tag}: HEAD blob {number}"
            if await headBlob(registry, image.repo, digest) == 200:
                continue
            self.stage = f"{image.tag}: upload blob {number} ({len(blob)} bytes)"
            if self.number % 3 == 0:
                body = StreamingBody(splitBytes(blob, 128 * 1024), len(blob), delay=0.002)
                await pushMonolithic(registry, image.repo, body, digest)
            elif self.number % 3 == 1:
                location = await startUpload(registry, image.repo)
                for start in range(0, len(blob), MiB):
                    piece = blob[start : start + MiB]
                    location = await patchChunk(registry, location, piece, start, len(piece))
                response = await finishUpload(registry, location, digest)
                if response.code != 201:
                    raise FailTest(f"closing the chunked upload of {digest}: {response.code}")
            else:
                await pushSinglePost(registry, image.repo, blob, digest)
        self.stage = f"{image.tag}: PUT manifest"
        response = await request(
            registry,
            "PUT",
            f"{registry.url}/v2/{image.repo}/manifests/{image.tag}",
            data=image.manifest,
            headers={"Content-Type": MEDIA_TYPE_MANIFEST},
        )
        await expect(response, 201, f"PUT manifest {image.repo}:{image.tag}")


async def assertImagesIntact(testCase: TestCase, registry: RegistryProcess, images) -> None:
    """
    Pull every image of C{images} by tag and check the manifest digest and
    every blob's content.
    """
    for image in images:
        response = await request(
            registry,
            "GET",
            f"{registry.url}/v2/{image.repo}/manifests/{image.tag}",
            headers={"Accept": MEDIA_TYPE_MANIFEST},
        )
        body = await expect(response, 200, f"GET manifest {image.repo}:{image.tag}")
        testCase.assertEqual(
            sha256Digest(body), image.digest, f"{image.repo}:{image.tag} has another manifest"
        )
        testCase.assertEqual(header(response, "Docker-Content-Digest"), image.digest)
        for blob in image.blobs:
            digest = sha256Digest(blob)
            pulled, length, _ = await pullDigest(registry, image.repo, digest)
            testCase.assertEqual(
                (pulled, length), (digest, len(blob)), f"blob {digest} of {image.tag}"
            )


class ConcurrentPushCrashTests(TestCase):
    """
    Repeated C{SIGKILL}s while several clients push images.
    """

    async def test_killWhilePushing(self):
        """
        Three clients push images (blobs, then the manifest) concurrently,
        two into the same repository, each with another upload style; the
        server is killed at a seeded random moment after at least one new
        image was acknowledged, and restarted on the same root, L{CRASH_ROUNDS}
        times.  After every kill storage is consistent (before and after the
        restart), and every image whose manifest PUT had returned 201, in
        this round or an earlier one, pulls whole: the tag names the same
        manifest digest and every blob hashes correctly.  At the end the
        tag lists hold every acknowledged tag.
        """
        from twisted.internet import reactor

        rng = random.Random("kill-while-pushing")
        registry = RegistryProcess(self)
        pushers = [
            _Pusher(number, "crash/app" if number < 2 else "crash/tools")
            for number in range(PUSHERS)
        ]

        def committed() -> list[_Image]:
            """
            Every image acknowledged so far, over all rounds.
            """
            return [image for pusher in pushers for image in pusher.committed]

        for crashRound in range(CRASH_ROUNDS):
            await registry.start()
            if crashRound:
                assertStorageConsistent(self, registry.root)
                await assertImagesIntact(self, registry, committed())
            before = len(committed())
            commits = {"count": 0}

            def onCommit():
                """
                Count an acknowledged image of this round.
                """
                commits["count"] += 1

            running = [ensureDeferred(pusher.run(registry, onCommit)) for pusher in pushers]
            await waitUntil(
                lambda: commits["count"] > 0 or any(d.called for d in running),
                timeout=60,
                message=f"round {crashRound}: no image was pushed within 60 s",
            )
            await deferLater(reactor, rng.uniform(0.1, 1.0))
            registry.kill()
            results = await DeferredList(running, consumeErrors=True)
            for success, result in results:
                if not success:
                    result.raiseException()
            self.assertGreater(len(committed()), before)
            repositories, verified = assertStorageConsistent(self, registry.root)
            self.assertEqual(repositories, ["crash/app", "crash/tools"])
            _log.info(
                "crash round {n}: {new} images acknowledged, killed during {stages};"
                " {verified} blob files verified",
                n=crashRound,
                new=len(committed()) - before,
                stages=[pusher.stage for pusher in pushers],
                verified=verified,
            )

        await registry.start()
        assertStorageConsistent(self, registry.root)
        await assertImagesIntact(self, registry, committed())
        for repo in sorted({pusher.repo for pusher in pushers}):
            response = await request(registry, "GET", f"{registry.url}/v2/{repo}/tags/list")
            body = json.loads(await expect(response, 200, f"tags list of {repo}"))
            expected = {image.tag for image in committed() if image.repo == repo}
            self.assertEqual(expected - set(body.get("tags") or []), set())

    test_killWhilePushing.timeout = 240


class ClientDisconnectTests(TestCase):
    """
    Clients that go away in the middle of an upload body.
    """

    async def _prepare(self, repo: str) -> RegistryProcess:
        """
        Start a server and create C{repo} with one small blob, so that only
        the abandoned upload can add files afterwards.
        """
        registry = RegistryProcess(self)
        await registry.start()
        seedBlob = b"seed blob\n"
        await pushSinglePost(registry, repo, seedBlob, sha256Digest(seedBlob))
        return registry

    async def test_abandonedSinglePost(self):
        """
        A single C{POST ?digest=} announcing 32 MiB whose client stops after
        8 MiB, once closing the connection and once resetting it, leaves no
        blob (HEAD 404, nothing under C{blobs/}); the server closes the
        spool and, soon after, no new file at all is left under the storage
        root: the spooled part under C{.uploads} is removed.  The same blob
        then pushes normally.
        """
        repo = "disconnect/post"
        registry = await self._prepare(repo)
        for reset in (False, True):
            data = random.Random(f"abandoned/{reset}").randbytes(32 * MiB)
            digest = sha256Digest(data)
            before = filesUnder(registry.root)
            head = (
                f"POST /v2/{repo}/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{registry.port}\r\n"
                f"Content-Type: {OCTET_STREAM}\r\n"
                f"Content-Length: {len(data)}"
            )
            answer = await sendPartialRequest(registry, head, data[: 8 * MiB], reset)
            self.assertEqual(answer, b"", "the server answered an incomplete body")

            def leftovers() -> list[str]:
                now = filesUnder(registry.root)
                return sorted(path for path in now if path not in before)

            await waitUntil(
                lambda: not leftovers(),
                timeout=10,
                message=lambda: f"abandoned upload left files behind: {leftovers()}",
            )
            self.assertEqual(await headBlob(registry, repo, digest), 404)
            self.assertFalse(os.path.exists(blobFileOf(registry.root, repo, digest)))
            assertStorageConsistent(self, registry.root)

            await pushSinglePost(registry, repo, data, digest)
            self.assertEqual(await headBlob(registry, repo, digest), 200)
        assertStorageConsistent(self, registry.root)

    async def test_abandonedPatch(self):
        """
        A PATCH announcing 16 MiB whose client resets the connection after
        6 MiB leaves the session usable once the server has closed the
        aborted request's files: C{GET <location>} reports between the
        2 MiB acknowledged before and the bytes the server stored, the
        rest sent from there and C{PUT ?digest=} store the right blob, and
        no partial blob ever appears.
        """
        repo = "disconnect/patch"
        registry = await self._prepare(repo)
        data = random.Random("abandoned-patch").randbytes(18 * MiB)
        digest = sha256Digest(data)
        location = await startUpload(registry, repo)
        first = 2 * MiB
        location = await patchChunk(registry, location, data[:first], 0, first)

        parts = urlsplit(location)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        head = (
            f"PATCH {path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{registry.port}\r\n"
            f"Content-Type: {OCTET_STREAM}\r\n"
            f"Content-Range: {first}-{len(data) - 1}\r\n"
            f"Content-Length: {len(data) - first}"
        )
        partial = 6 * MiB
        answer = await sendPartialRequest(registry, head, data[first : first + partial], True)
        self.assertEqual(answer, b"", "the server answered an incomplete body")
        self.assertEqual(await headBlob(registry, repo, digest), 404)
        assertStorageConsistent(self, registry.root)

        response = await request(registry, "GET", location)
        await expect(response, 204, "upload status after the abandoned PATCH")
        offset = parseRange(header(response, "Range"))
        self.assertTrue(
            first <= offset <= first + partial,
            f"the session reports {offset} bytes; {first} were acknowledged,"
            f" {first + partial} sent",
        )
        location = resolve(registry, header(response, "Location") or location)
        location = await patchChunk(registry, location, data[offset:], offset, len(data) - offset)
        response = await finishUpload(registry, location, digest)
        self.assertEqual(response.code, 201)
        pulled, length, _ = await pullDigest(registry, repo, digest)
        self.assertEqual((pulled, length), (digest, len(data)))
        assertStorageConsistent(self, registry.root)
