# -*- test-case-name: tests.test_dedupe -*-
"""
Dedupe (C{storage.dedupe}): identical blobs in different repositories are
stored once, as hard links.

The layouts stay the source of truth.  Beside them, C{ROOT/.zotwist-dedupe/}
holds an sqlite index of which repositories hold which digest
(L{DedupeIndex}); it is only a hint:
 - every holder it names is checked before use (the file must exist, be a
   regular file and, when the expected size is known, have that size); an
   entry that fails is dropped, so a stale index costs at most a copy;
 - when the index is missing, unreadable, of another schema, or was left
   half built, it is rebuilt from a walk of the layouts, in the background.

L{Dedupe} is what L{zotwist.storage.local.LocalStore} calls:
 - L{Dedupe.linkInto} before a verified blob is published: when another
   repository already holds the digest, its file is hard-linked into place
   (through a temporary name and a rename, so the name appears whole);
 - L{Dedupe.recorded} after a blob was published some other way;
 - L{Dedupe.holders} for a mount without C{from}.

At start L{Dedupe.start} checks that the filesystem allows hard links under
the root (else it logs so, and blobs are copied), and when the setting
changed since the last run (or the index is new) converts the root in the
background: dedupe on links identical blobs, dedupe off replaces every
hard-linked blob by a copy of its own.  Both work file by file through a
temporary file and a rename, so a blob's name never disappears, and report
progress in the log.  The mode reached is recorded only when the pass
finishes, so an interrupted pass runs again at the next start.
"""

import errno
import fcntl
import os
import shutil
import sqlite3
import stat
import threading
import time
import uuid
import zlib

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.storage.locks import fileLock
from zotwist.storage.writers import hashFile

#: The directory under the storage root that holds the index.
DIRECTORY = ".zotwist-dedupe"
#: Bumped when the index's tables change: an index of another version is
#: rebuilt.
SCHEMA_VERSION = "1"
#: Recorded modes: what the last finished conversion left the root in.
LINKED = "linked"
COPIES = "copies"
#: How many files a conversion step handles in one trip to the disk pool.
_BATCH = 64
#: How often a conversion reports its progress, in seconds.
_PROGRESS_INTERVAL = 2.0
_LOCK_STRIPES = 64


class DedupeIndex:
    """
    The sqlite index: rows C{(digest, repository)}, one per repository
    holding the blob, and a small C{meta} table.  Blocking; safe to use from
    several threads (one connection behind a lock) and several processes
    (sqlite's own locking).

    @ivar fresh: whether L{open} found no usable index (so it must be
        rebuilt).
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.fresh = False

    def open(self) -> None:
        """
        Open (or create) the index.  An unreadable file, or one of another
        schema version, is moved aside and started over.
        """
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        # Worker processes starting together must not take each other's
        # half-created index for a broken one.
        with fileLock(os.path.join(directory, "open.lock")):
            self._open()

    def _open(self) -> None:
        existed = os.path.exists(self.path)
        try:
            self._connect()
            version = self.getMeta("version")
            if existed and version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"index schema version {version!r}")
        except sqlite3.DatabaseError:
            self.close()
            for suffix in ("", "-journal", "-wal", "-shm"):
                try:
                    os.unlink(self.path + suffix)
                except FileNotFoundError:
                    pass
            existed = False
            self._connect()
        if not existed:
            self.setMeta("version", SCHEMA_VERSION)
        self.fresh = not existed or self.getMeta("complete") != "1"

    def _connect(self) -> None:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            # The index is a cache the layouts can rebuild: no fsync.  WAL
            # lets worker processes read while one writes.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(
                "CREATE TABLE IF NOT EXISTS holders (digest TEXT NOT NULL, repo TEXT NOT NULL,"
                " PRIMARY KEY (digest, repo)) WITHOUT ROWID"
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute("SELECT COUNT(*) FROM holders WHERE digest = ''").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        self._db = db

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    def _execute(self, sql: str, args=()) -> list:
        with self._lock:
            if self._db is None:
                return []
            return self._db.execute(sql, args).fetchall()

    def getMeta(self, key: str) -> str | None:
        rows = self._execute("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def setMeta(self, key: str, value: str | None) -> None:
        if value is None:
            self._execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def holders(self, digest: str) -> list[str]:
        return [r[0] for r in self._execute(
            "SELECT repo FROM holders WHERE digest = ? ORDER BY repo", (digest,)
        )]

    def add(self, digest: str, repo: str) -> None:
        self._execute("INSERT OR IGNORE INTO holders (digest, repo) VALUES (?, ?)", (digest, repo))

    def addMany(self, pairs) -> None:
        with self._lock:
            if self._db is None:
                return
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO holders (digest, repo) VALUES (?, ?)", pairs
                )
            finally:
                self._db.execute("COMMIT")

    def discard(self, digest: str, repo: str) -> None:
        self._execute("DELETE FROM holders WHERE digest = ? AND repo = ?", (digest, repo))

    def clear(self) -> None:
        self._execute("DELETE FROM holders")

    def shared(self) -> list[str]:
        """
        The digests that more than one repository holds.
        """
        return [r[0] for r in self._execute(
            "SELECT digest FROM holders GROUP BY digest HAVING COUNT(*) > 1 ORDER BY digest"
        )]

    def everything(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._execute(
            "SELECT digest, repo FROM holders ORDER BY digest, repo"
        )]


def hardLinksWork(directory: str, link=os.link) -> bool:
    """
    Whether the filesystem holding C{directory} allows hard links: link a
    temporary file and look at its link count.  Blocking.

    @param link: C{os.link} (tests pass one that fails).
    """
    first = os.path.join(directory, f".linktest-{uuid.uuid4().hex}")
    second = first + "-link"
    try:
        with open(first, "wb") as f:
            f.write(b"zotwist")
        link(first, second)
        return os.stat(first).st_nlink == 2 and os.path.samefile(first, second)
    except OSError:
        return False
    finally:
        for path in (first, second):
            try:
                os.unlink(path)
            except OSError:
                pass


def blobsOf(repoDir: str):
    """
    Yield the digests of the blobs in the layout at C{repoDir} (temporary
    files and names that are not digests are skipped).  Blocking.
    """
    blobs = os.path.join(repoDir, "blobs")
    try:
        algorithms = os.listdir(blobs)
    except (FileNotFoundError, NotADirectoryError):
        return
    for algorithm in algorithms:
        try:
            names = os.listdir(os.path.join(blobs, algorithm))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for encoded in names:
            digest = f"{algorithm}:{encoded}"
            try:
                oci.parseDigest(digest)
            except RegistryError:
                continue
            yield digest


class Dedupe:
    """
    Dedupe for one L{zotwist.storage.local.LocalStore}.

    @param store: the store (for its root, its repositories and
        C{_blobPath}).
    @param enabled: C{storage.dedupe}.
    @param linkCheck: C{linkCheck(directory) -> bool}, whether hard links
        work there (L{hardLinksWork}; tests replace it).
    @ivar linking: whether new blobs are linked (enabled and the filesystem
        allows it); known after L{start}.
    @ivar ready: whether the index covers the root (not being rebuilt).
    @ivar settled: a L{Deferred} that fires when the start-up rebuild and
        conversion are over.
    """

    _log = Logger()

    def __init__(self, store, enabled: bool, linkCheck=hardLinksWork):
        self._store = store
        self.enabled = enabled
        self._linkCheck = linkCheck
        self.directory = os.path.join(store.root, DIRECTORY)
        self.index = DedupeIndex(os.path.join(self.directory, "index.db"))
        self.linking = False
        self.ready = False
        self.settled: Deferred = succeed(None)
        self._stopping = False
        self._stopped = False
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    # -- start and stop ----------------------------------------------------------

    def prepare(self) -> None:
        """
        Blocking part of the start: open the index, check hard links.
        """
        os.makedirs(self.directory, exist_ok=True)
        self.index.open()
        capable = self._linkCheck(self.directory)
        if self.enabled and not capable:
            self._log.warn(
                "storage.dedupe: the filesystem under {root} does not allow hard links;"
                " identical blobs will be stored as copies",
                root=self._store.root,
            )
        self.linking = self.enabled and capable
        self.ready = not self.index.fresh

    async def start(self) -> None:
        """
        Prepare, then rebuild and convert in the background (L{settled}).
        """
        await self._store._runner.run(self.prepare)
        if self._stopping:
            return
        self.settled = ensureDeferred(self._maintain())
        self.settled.addErrback(self._maintenanceFailed)

    def _maintenanceFailed(self, failure) -> None:
        # The root can vanish or turn read-only under a running server: the
        # layouts are untouched, the pass runs again at the next start.
        self._log.error(
            "storage.dedupe: start-up maintenance stopped: {error}", error=failure.value
        )

    async def stop(self) -> None:
        """
        Stop a conversion after its current step; close the index.
        """
        if self._stopped:
            return
        self._stopped = self._stopping = True
        await self.settled
        await self._store._runner.run(self.index.close)

    async def _maintain(self) -> None:
        runner = self._store._runner
        lockFD = await runner.run(self._tryLock)
        if lockFD is None:
            # Another process sharing the root does it.
            self._log.info("storage.dedupe: another process maintains the index")
            self.ready = True
            return
        try:
            if self.index.fresh:
                await self._rebuild()
                if self._stopping:
                    return
            recorded = await runner.run(self.index.getMeta, "mode")
            wanted = LINKED if self.linking else COPIES
            if recorded != wanted or self.index.fresh:
                if self.linking:
                    finished = await self._linkAll()
                else:
                    finished = await self._unlinkAll()
                if finished:
                    await runner.run(self.index.setMeta, "mode", wanted)
        finally:
            await runner.run(os.close, lockFD)

    def _tryLock(self) -> int | None:
        fd = os.open(
            os.path.join(self.directory, "maintenance.lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    # -- rebuild -------------------------------------------------------------------

    async def _rebuild(self) -> None:
        """
        Fill the index from a walk of the layouts.
        """
        runner = self._store._runner
        started = time.monotonic()
        self._log.info("storage.dedupe: rebuilding the blob index from the layouts")
        await runner.run(self.index.setMeta, "complete", None)
        await runner.run(self.index.clear)
        names = list(self._store._repositories)
        count = 0
        last = started
        for first in range(0, len(names), _BATCH):
            if self._stopping:
                return
            batch = names[first : first + _BATCH]
            count += await runner.run(self._indexRepositories, batch)
            now = time.monotonic()
            if now - last >= _PROGRESS_INTERVAL:
                last = now
                self._log.info(
                    "storage.dedupe: indexed {done}/{total} repositories ({blobs} blobs)",
                    done=first + len(batch), total=len(names), blobs=count,
                )
        await runner.run(self.index.setMeta, "complete", "1")
        self.ready = True
        self._log.info(
            "storage.dedupe: blob index rebuilt: {blobs} blobs in {total} repositories"
            " ({seconds:.2f} s)",
            blobs=count, total=len(names), seconds=time.monotonic() - started,
        )

    def _indexRepositories(self, names: list[str]) -> int:
        pairs = [
            (digest, name)
            for name in names
            for digest in blobsOf(self._store._repoDir(name))
        ]
        self.index.addMany(pairs)
        return len(pairs)

    # -- conversions -----------------------------------------------------------------

    async def _convert(self, what: str, items: list, step) -> bool:
        """
        Run C{step(batch) -> (changed, bytes)} over C{items} in batches in
        the disk pool, logging progress.

        @return: whether it went through (not stopped).
        """
        runner = self._store._runner
        started = last = time.monotonic()
        changed = moved = 0
        self._log.info(
            "storage.dedupe: {what}: {total} to look at", what=what, total=len(items)
        )
        for first in range(0, len(items), _BATCH):
            if self._stopping:
                self._log.info("storage.dedupe: {what}: stopped; resumes at the next start",
                               what=what)
                return False
            c, b = await runner.run(step, items[first : first + _BATCH])
            changed += c
            moved += b
            now = time.monotonic()
            if now - last >= _PROGRESS_INTERVAL:
                last = now
                self._log.info(
                    "storage.dedupe: {what}: {done}/{total} ({changed} files, {bytes} bytes)",
                    what=what, done=min(first + _BATCH, len(items)), total=len(items),
                    changed=changed, bytes=moved,
                )
        self._log.info(
            "storage.dedupe: {what}: done, {changed} files, {bytes} bytes ({seconds:.2f} s)",
            what=what, changed=changed, bytes=moved, seconds=time.monotonic() - started,
        )
        return True

    async def _linkAll(self) -> bool:
        digests = await self._store._runner.run(self.index.shared)
        return await self._convert("linking identical blobs", digests, self._linkBatch)

    async def _unlinkAll(self) -> bool:
        pairs = await self._store._runner.run(self.index.everything)
        return await self._convert("copying hard-linked blobs", pairs, self._unlinkBatch)

    def _linkBatch(self, digests: list[str]) -> tuple[int, int]:
        linked = saved = 0
        for digest in digests:
            with self._lockFor(digest):
                c, b = self._linkDigest(digest)
            linked += c
            saved += b
        return linked, saved

    def _linkDigest(self, digest: str) -> tuple[int, int]:
        """
        Make every holder of C{digest} a link to one verified file.
        Blocking.
        """
        found = []
        for repo in self.index.holders(digest):
            path = self._store._blobPath(repo, digest)
            try:
                st = os.stat(path)
            except OSError:
                self.index.discard(digest, repo)
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((path, st))
        if len({(st.st_dev, st.st_ino) for _, st in found}) < 2:
            return 0, 0
        # The most linked copy first: the fewest files change.
        found.sort(key=lambda item: -item[1].st_nlink)
        algorithm = digest.split(":", 1)[0]
        canonical = None
        for path, st in found:
            try:
                actual, size = hashFile(path, algorithm)
            except OSError:
                continue
            if actual == digest:
                canonical = (path, st)
                break
            self._log.warn(
                "storage.dedupe: {path} does not hash to its name; not linking it", path=path
            )
        if canonical is None:
            return 0, 0
        source, sourceStat = canonical
        linked = saved = 0
        for path, st in found:
            if (st.st_dev, st.st_ino) == (sourceStat.st_dev, sourceStat.st_ino):
                continue
            # (A copy of another size is not what its name says: a link to
            # the verified file repairs it.)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            try:
                os.link(source, tmp)
            except OSError:
                continue
            try:
                if not self._sameFile(path, st):
                    continue  # replaced or deleted meanwhile: leave it be
                os.replace(tmp, path)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
            linked += 1
            if st.st_nlink == 1:
                saved += st.st_size
        return linked, saved

    def _unlinkBatch(self, pairs: list) -> tuple[int, int]:
        copied = written = 0
        for digest, repo in pairs:
            path = self._store._blobPath(repo, digest)
            with self._lockFor(digest):
                try:
                    st = os.stat(path)
                except OSError:
                    self.index.discard(digest, repo)
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_nlink < 2:
                    continue
                tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                try:
                    shutil.copyfile(path, tmp)
                    if self._store._commit:
                        fd = os.open(tmp, os.O_RDONLY)
                        try:
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                    if self._sameFile(path, st):
                        os.replace(tmp, path)
                        copied += 1
                        written += st.st_size
                finally:
                    if os.path.lexists(tmp):
                        os.unlink(tmp)
        return copied, written

    @staticmethod
    def _sameFile(path: str, st: os.stat_result) -> bool:
        try:
            now = os.stat(path)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)

    # -- hooks for the store (blocking, in the disk pool) ---------------------------------

    def _lockFor(self, digest: str) -> threading.Lock:
        return self._locks[zlib.crc32(digest.encode()) % _LOCK_STRIPES]

    def lockFor(self, digest: str) -> threading.Lock:
        """
        The lock that serializes publishing C{digest} in this process, so two
        pushes of one blob to two repositories end as one file.
        """
        return self._lockFor(digest)

    def holders(self, digest: str, size: int | None = None, exclude: str | None = None):
        """
        The repositories whose layout holds C{digest} as a regular file (of
        C{size} bytes when given), with their paths and C{stat}; entries
        that fail the check are dropped from the index.
        """
        found = []
        for repo in self.index.holders(digest):
            if repo == exclude:
                continue
            path = self._store._blobPath(repo, digest)
            try:
                st = os.stat(path)
            except OSError:
                self.index.discard(digest, repo)
                continue
            if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
                self.index.discard(digest, repo)
                continue
            found.append((repo, path, st))
        return found

    def linkInto(self, name: str, digest: str, size: int, target: str) -> bool:
        """
        When dedupe links and another repository holds C{digest} (a regular
        file of C{size} bytes), hard-link it to C{target} of repository
        C{name}, through a temporary name and a rename.  A C{target} that
        exists is left alone (a re-push, perhaps repairing a damaged file,
        keeps the fresh upload).  Call under L{lockFor}.

        @return: whether C{target} is now a link to the existing blob.
        """
        if not self.linking or os.path.lexists(target):
            return False
        for _repo, path, _st in self.holders(digest, size, exclude=name):
            tmp = f"{target}.{uuid.uuid4().hex}.tmp"
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.link(path, tmp)
            except OSError as e:
                if e.errno not in (errno.EMLINK, errno.ENOENT, errno.EXDEV, errno.EPERM):
                    raise
                continue
            try:
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
            self.index.add(digest, name)
            return True
        return False

    def recorded(self, name: str, digest: str) -> None:
        """
        C{name} now holds C{digest}.
        """
        self.index.add(digest, name)

    def removed(self, name: str, digest: str) -> None:
        """
        C{name} no longer holds C{digest}.
        """
        self.index.discard(digest, name)


__all__ = ["Dedupe", "DedupeIndex", "hardLinksWork", "blobsOf", "DIRECTORY", "LINKED", "COPIES"]
