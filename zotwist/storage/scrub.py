# -*- test-case-name: tests.test_scrub -*-
"""
Scrub: re-hash every blob and re-validate every manifest of the local store
(zot's C{extensions.scrub}, C{enable}, C{interval}; C{zot scrub CONFIG}).

Per repository, blocking (run in a thread of its own, never the reactor):
 - every file C{blobs/<alg>/<hex>} is hashed and compared with its name; one
   that does not match is corrupt and is moved aside into
   C{ROOT/<repo>/.corrupt/} (kept for inspection, out of the layout), so
   HEAD and GET answer 404 for it and a client's re-push repairs it;
 - every entry of C{index.json} must have its manifest bytes, which must
   parse as a manifest, and every blob and child manifest it references must
   be present.

Hashing runs at a bounded rate (L{DEFAULT_RATE} bytes a second in the
server), so a scrub of a large root does not starve pushes and pulls of disk
bandwidth.  Problems are returned as L{Problem}s, logged, and counted in the
metrics when they are on.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.manifests import parseManifest
from zotwist.storage.locks import fileLock

_log = Logger()

#: Bytes a second the background scrub hashes at most.
DEFAULT_RATE = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


#: Every L{Problem.kind}.
PROBLEM_KINDS = (
    "corrupt-blob", "missing-manifest", "invalid-manifest", "missing-reference", "invalid-index",
)


@dataclass(frozen=True)
class Problem:
    """
    One piece of damage.

    @ivar repository: the repository's name.
    @ivar kind: one of L{PROBLEM_KINDS}: C{"corrupt-blob"} (moved aside),
        C{"missing-manifest"}, C{"invalid-manifest"}, C{"missing-reference"}
        or C{"invalid-index"}.
    @ivar digest: the blob or manifest concerned.
    @ivar detail: a human-readable explanation.
    """

    repository: str
    kind: str
    digest: str
    detail: str

    def __str__(self) -> str:
        return f"{self.repository}: {self.kind} {self.digest}: {self.detail}"


class _Stopped(Exception):
    """
    The service is stopping: abandon the round.
    """


class _Throttle:
    """
    Sleeps as needed to keep the bytes hashed under C{rate} a second.
    """

    def __init__(self, rate: float | None, sleep=time.sleep, clock=time.monotonic,
                 stopped=lambda: False):
        self._rate = rate
        self._stopped = stopped
        self._sleep = sleep
        self._clock = clock
        self._started = clock()
        self._bytes = 0

    def consumed(self, count: int) -> None:
        if self._stopped():
            raise _Stopped()
        if not self._rate:
            return
        self._bytes += count
        ahead = self._bytes / self._rate - (self._clock() - self._started)
        if ahead > 0:
            self._sleep(ahead)


def _hashOpenFile(fd: int, algorithm: str, throttle: _Throttle) -> str:
    digest = hashlib.new(algorithm)
    offset = 0
    while True:
        chunk = os.pread(fd, _CHUNK, offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
        throttle.consumed(len(chunk))
    return f"{algorithm}:{digest.hexdigest()}"


def _quarantine(repoDir: str, path: str, digest: str, inode: int) -> bool:
    """
    Move the corrupt file at C{path} into C{.corrupt/}, unless what is at
    C{path} now is another file (a re-push replaced it meanwhile).

    @return: whether it was moved.
    """
    aside = f"{path}.scrub-{os.getpid()}.tmp"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if os.stat(aside).st_ino != inode:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        os.unlink(aside)
        return False
    corrupt = os.path.join(repoDir, ".corrupt")
    os.makedirs(corrupt, exist_ok=True)
    name = digest.replace(":", "-") + time.strftime("-%Y%m%dT%H%M%SZ", time.gmtime())
    os.replace(aside, os.path.join(corrupt, name))
    return True


def scrubRepositoryBlocking(
    root: str, name: str, throttle: _Throttle | None = None, repair: bool = True
) -> list[Problem]:
    """
    Check one repository.  Blocking.

    @param repair: move corrupt blobs aside (else only report them).
    """
    throttle = throttle or _Throttle(None)
    repoDir = os.path.join(root, *name.split("/"))
    problems: list[Problem] = []
    blobsDir = os.path.join(repoDir, "blobs")
    try:
        algorithms = sorted(e.name for e in os.scandir(blobsDir) if e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        algorithms = []
    for algorithm in algorithms:
        try:
            names = sorted(os.listdir(os.path.join(blobsDir, algorithm)))
        except OSError:
            continue
        for encoded in names:
            digest = f"{algorithm}:{encoded}"
            try:
                oci.parseDigest(digest)
            except RegistryError:
                continue  # a temporary file, not a blob
            path = os.path.join(blobsDir, algorithm, encoded)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # collected meanwhile
            try:
                inode = os.fstat(fd).st_ino
                actual = _hashOpenFile(fd, algorithm, throttle)
            finally:
                os.close(fd)
            if actual == digest:
                continue
            moved = repair and _quarantine(repoDir, path, digest, inode)
            if repair and not moved:
                continue  # replaced by a good copy meanwhile
            problems.append(
                Problem(
                    name, "corrupt-blob", digest,
                    f"content hashes to {actual}"
                    + ("; moved to .corrupt/" if moved else ""),
                )
            )
    # Under the index lock, as the collector deletes: an index read before a
    # collection and manifests looked for after it would be false damage.
    if os.path.isfile(os.path.join(repoDir, "index.json")):
        with fileLock(os.path.join(repoDir, ".index.lock")):
            problems += _checkManifests(name, repoDir)
    return problems


def _checkManifests(name: str, repoDir: str) -> list[Problem]:
    problems = []
    try:
        with open(os.path.join(repoDir, "index.json"), "rb") as f:
            document = json.loads(f.read())
        manifests = document["manifests"]
        if not isinstance(manifests, list):
            raise ValueError("manifests is not a list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [Problem(name, "invalid-index", "index.json", str(e))]

    def present(digest: str) -> bool:
        algorithm, encoded = oci.parseDigest(digest)
        return os.path.isfile(os.path.join(repoDir, "blobs", algorithm, encoded))

    seen = set()
    queue = [(m.get("digest"), m.get("mediaType")) for m in manifests if isinstance(m, dict)]
    while queue:
        digest, mediaType = queue.pop()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            algorithm, encoded = oci.parseDigest(digest)
        except (RegistryError, TypeError, AttributeError):
            problems.append(Problem(name, "invalid-index", str(digest)[:100], "bad digest"))
            continue
        try:
            with open(os.path.join(repoDir, "blobs", algorithm, encoded), "rb") as f:
                body = f.read()
        except OSError:
            problems.append(Problem(name, "missing-manifest", digest, "no bytes"))
            continue
        if oci.digestOf(body, algorithm) != digest:
            problems.append(Problem(name, "corrupt-blob", digest, "manifest bytes changed"))
            continue
        try:
            info = parseManifest(body, mediaType, digest)
        except RegistryError as e:
            problems.append(Problem(name, "invalid-manifest", digest, e.message or e.code))
            continue
        for blob in info.blobs:
            if not present(blob.digest):
                problems.append(
                    Problem(name, "missing-reference", blob.digest, f"needed by {digest}")
                )
        for child in info.children:
            if not present(child.digest):
                problems.append(
                    Problem(name, "missing-reference", child.digest, f"needed by {digest}")
                )
            else:
                queue.append((child.digest, child.mediaType))
    return problems


def listRepositories(root: str) -> list[str]:
    """
    The repositories under C{root}, as the store's start-up scan finds them.
    Blocking.
    """
    from zotwist.storage.local import LocalStore
    from zotwist.threads import InlineRunner

    return sorted(LocalStore(root, InlineRunner())._scan())


def scrubRootBlocking(
    root: str, rate: float | None = None, repair: bool = True, sleep=time.sleep
) -> list[Problem]:
    """
    Check every repository under C{root}.  Blocking.
    """
    throttle = _Throttle(rate, sleep)
    problems = []
    for name in listRepositories(root):
        problems += scrubRepositoryBlocking(root, name, throttle, repair)
    return problems


class ScrubService(Service):
    """
    Scrubs the store every C{interval} seconds (the first an interval after
    start), in C{runner} (a pool of its own: the scrub sleeps to keep its
    rate, and must not hold the disk pool's threads).

    @ivar problems: what the last complete round found.
    @ivar onProblems: called with each round's problems (the metrics hook).
    """

    name = "scrub"

    def __init__(self, store, runner, interval: float, rate: float = DEFAULT_RATE,
                 reactor=None, onProblems=None):
        self.store = store
        self.runner = runner
        self.interval = interval
        self.rate = rate
        self.onProblems = onProblems
        self.problems: list[Problem] = []
        self.rounds = 0
        self._reactor = reactor
        self._loop = None
        self._running = None
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._loop = LoopingCall(self._tick)
        if self._reactor is not None:
            self._loop.clock = self._reactor
        self._loop.start(self.interval, now=False)

    def _tick(self) -> None:
        if self._running is None:
            self._running = ensureDeferred(self.scrubOnce())
            self._running.addErrback(lambda f: _log.failure("Scrub round failed", f))
            self._running.addBoth(self._done)

    def _done(self, _) -> None:
        self._running = None

    async def scrubOnce(self) -> list[Problem]:
        started = time.monotonic()
        throttle = _Throttle(self.rate, stopped=lambda: self._stopping)
        problems = []
        if not self._mayGoOn():
            return problems
        for name in await self.store.catalog():
            if not self._mayGoOn():
                return problems
            try:
                found = await self._scrubRepository(name, throttle)
            except _Stopped:
                return problems
            problems += found
        self.problems = problems
        self.rounds += 1
        _log.info(
            "Scrub checked the storage in {seconds:.1f} s: {count} problems",
            seconds=time.monotonic() - started, count=len(problems),
        )
        if self.onProblems is not None:
            self.onProblems(problems)
        return problems

    def _mayGoOn(self) -> bool:
        """
        Whether the round may start, or go on to the next repository.
        """
        return not self._stopping

    async def _scrubRepository(self, name: str, throttle) -> list[Problem]:
        """
        Check repository C{name}, putting what is corrupt out of service.

        @raise _Stopped: the service is stopping.
        """
        found = await self.runner.run(scrubRepositoryBlocking, self.store.root, name, throttle)
        for problem in found:
            _log.error("Scrub: {problem}", problem=str(problem))
            if problem.kind == "corrupt-blob":
                await self._forgetCopies(problem.digest)
        return found

    async def _forgetCopies(self, digest: str) -> None:
        """
        A corrupt blob may be one inode linked into several repositories
        (dedupe): forget every holder of the digest in the dedupe index, so
        that no push links a fresh upload to a copy not yet scrubbed; a
        later push writes its own verified bytes and is recorded again.
        """
        dedupe = getattr(self.store, "_dedupe", None)
        if dedupe is None:
            return
        for holder in await self.runner.run(dedupe.index.holders, digest):
            await self.runner.run(dedupe.removed, holder, digest)

    def stopService(self):
        super().stopService()
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._running
