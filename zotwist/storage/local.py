# -*- test-case-name: tests.test_local -*-
"""
The local-disk store: every repository an OCI image layout under one root.

C{ROOT/<name>/} holds C{oci-layout}, C{index.json} (tags are
C{org.opencontainers.image.ref.name} annotations) and C{blobs/<alg>/<hex>}, so
C{skopeo} and C{umoci} read a repository straight off the disk.  Upload
sessions live beside it in C{ROOT/<name>/.uploads/<id>/}, and survive
restarts.

Rules that keep the disk consistent whatever happens to the process:
 - a blob appears under its digest only by C{os.replace} of a file whose
   digest was verified;
 - C{index.json} is only ever replaced whole, under a lock that holds across
   processes (L{zotwist.storage.locks.fileLock});
 - every path is built from a validated name, digest or session id, so no
   request can reach outside the root.

Reads are served from caches validated by C{stat}: the parsed C{index.json}
of each repository (keyed by inode, mtime and size, so changes made by
another process are noticed), manifest bodies and their parsed form by digest.
"""

import bisect
import itertools
import json
import os
import re
import shutil
import time
import uuid

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.manifests import ManifestInfo
from zotwist.storage import journal, manifestlogic, syncer
from zotwist.storage.dedupe import Dedupe
from zotwist.storage.index import IndexEntries, RepositoryIndex
from zotwist.storage.interfaces import IBlobReader, IRegistryStore
from zotwist.storage.locks import fileLock, sharedFileLock
from zotwist.storage.manifestlogic import ManifestCache
from zotwist.storage.tagtimes import TagTimes
from zotwist.storage.writers import (
    AppendWriter,
    FreshWriter,
    SessionState,
    hashFile,
)

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}\Z")
_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
_EMPTY_INDEX = {
    "schemaVersion": 2,
    "mediaType": oci.OCI_INDEX,
    "manifests": [],
}
#: How often a long start-up scan reports its progress, in seconds.
_SCAN_PROGRESS_INTERVAL = 1.0
#: How much of an index journal the reactor thread reads itself (more is
#: read in the pool).
_SYNC_JOURNAL_READ = 64 * 1024
#: Directories inside a repository that are not nested repositories.
_NOT_REPOSITORIES = frozenset({"blobs", ".uploads"})


@implementer(IBlobReader)
class LocalBlobReader:
    """
    An open blob file; reads run in the disk pool.
    """

    def __init__(self, runner, fd: int, size: int):
        self._runner = runner
        self._fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> Deferred:
        return self._runner.run(os.pread, self._fd, length, offset)

    def fileno(self) -> int:
        """
        The open file's descriptor, for C{sendfile}.
        """
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


_tmpCounter = itertools.count()


def _tmpSuffix() -> str:
    """
    A name part no other writer uses: this process and a per-process
    counter (cheaper than a UUID, and as unique among live writers).
    """
    return f"{os.getpid()}-{next(_tmpCounter)}"


def _writeAtomically(path: str, data, commit: bool, exchange: bool = False) -> os.stat_result:
    """
    Replace C{path} with C{data} (bytes, or an iterable of bytes written one
    after the other) so that readers see the old or the new content, never
    a mix.  Blocking.

    @param exchange: swap the new file in without making the filesystem
        flush it (L{zotwist.storage.syncer.replace}); for files replaced
        often, whose caller syncs them later.

    @return: the new file's C{stat} (a rename keeps inode and mtime, so this
        is also what a later C{stat} of C{path} shows until it changes).
    """
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{_tmpSuffix()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        for piece in (data,) if isinstance(data, bytes) else data:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
        if commit:
            os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        syncer.replace(tmp, path, commit, exchange_=exchange)
    except BaseException:
        os.unlink(tmp)
        raise
    return st


def _freshen(path: str) -> None:
    """
    Set C{path}'s mtime to now (best effort).
    """
    try:
        os.utime(path)
    except OSError:
        pass


def _createIfAbsent(path: str, data: bytes) -> bool:
    """
    Create C{path} holding C{data} unless it exists, atomically: a file
    written aside and then hard-linked into place (C{link} fails if the name
    is taken), so two processes racing to create a layout cannot clobber
    each other.  Blocking.

    @return: whether this call created it.
    """
    if os.path.exists(path):
        return False
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{_tmpSuffix()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


@implementer(IRegistryStore)
class LocalStore:
    """
    L{IRegistryStore} on a local filesystem.

    @param root: the storage root directory.
    @param runner: an L{zotwist.threads.IBlockingRunner} for disk work.
    @param commit: fsync files before renaming them (zot's C{storage.commit}).
    @param dedupe: zot's C{storage.dedupe}: L{True} to store identical blobs
        of different repositories as hard links, L{False} for copies (see
        L{zotwist.storage.dedupe}); L{None} (unit tests) for no blob index
        at all: mounts link when they can and search every repository.
    """

    _log = Logger()

    def __init__(
        self,
        root: str,
        runner,
        commit: bool = False,
        reactor=None,
        uploadRunner=None,
        dedupe: bool | None = None,
    ):
        self.root = os.path.abspath(root)
        self._journalPath = os.path.join(self.root, ".repositories.journal")
        self._journalOffset = 0
        self._runner = runner
        # Upload bodies are written and hashed in their own (lower
        # priority) pool, so bulk pushes never queue behind index writes.
        self._uploadRunner = uploadRunner or runner
        self._commit = commit
        self._reactor = reactor
        self._repositories: list[str] = []
        self._repositorySet: set[str] = set()
        self._indexes: dict[str, RepositoryIndex] = {}
        self._sessions: dict[tuple[str, str], SessionState] = {}
        #: Manifest bytes and their parsed form, by digest.
        self.manifests = ManifestCache(self._loadManifest)
        self._layouts: set[str] = set()
        self._writerEntries: dict[str, tuple] = {}
        self._indexReloads: dict[str, list] = {}
        self._indexWaiters: dict[str, list] = {}
        self._indexQueues: dict[str, list] = {}
        self._indexWriting: set[str] = set()
        self._dedupe = Dedupe(self, dedupe) if dedupe is not None else None
        #: Indexes replaced without a flush, synced about once a second.
        self._lazySync = syncer.LazySync(
            runner, reactor,
            lockFor=lambda path: fileLock(os.path.join(os.path.dirname(path), ".index.lock")),
        )
        #: Push and pull times per tag and manifest digest (for retention).
        self.tagTimes = TagTimes(self.root, runner, reactor)
        #: Refresh a blob's mtime when a client uses it and it is older than
        #: this many seconds, so the garbage collector (which removes
        #: unreferenced blobs older than C{gcDelay}) does not take a blob a
        #: client just saw; L{None} (no collector) never touches.
        self.touchAfter: float | None = None

    # -- paths ----------------------------------------------------------------

    def _repoDir(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def _blobPath(self, name: str, digest: str) -> str:
        algorithm, encoded = oci.parseDigest(digest)
        return os.path.join(self._repoDir(name), "blobs", algorithm, encoded)

    def _uploadDir(self, name: str, uploadID: str) -> str:
        if not _UPLOAD_ID.match(uploadID):
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID[:100]})
        return os.path.join(self._repoDir(name), ".uploads", uploadID)

    # -- start-up -------------------------------------------------------------

    async def startService(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        # Repositories created from now on by other processes sharing this
        # root are announced in the journal after this offset.
        self._journalOffset = self._journalSize()
        started = time.monotonic()
        self._log.info("Scanning storage root {root}", root=self.root)
        names = await self._runner.run(self._scan, self._progressReporter())
        self._repositories = sorted(names)
        self._repositorySet = set(names)
        self._log.info(
            "Storage root {root} holds {count} repositories (scanned in {seconds:.2f} s)",
            root=self.root, count=len(names), seconds=time.monotonic() - started,
        )
        self.tagTimes.start()
        self._lazySync.start()
        if self._dedupe is not None:
            await self._dedupe.start()

    async def stopService(self) -> None:
        """
        Stop background storage work (a dedupe conversion) after its step;
        write the push and pull times not yet written.
        """
        if self._dedupe is not None:
            await self._dedupe.stop()
        await self.tagTimes.stop()
        await self._lazySync.stop()

    def _progressReporter(self):
        """
        A callable the scan thread can report its count to: the event is
        logged on the reactor thread when there is a reactor.
        """

        def log(count: int, seconds: float) -> None:
            self._log.info(
                "Scanning storage root {root}: {count} repositories so far ({seconds:.1f} s)",
                root=self.root, count=count, seconds=seconds,
            )

        if self._reactor is None:
            return log
        return lambda count, seconds: self._reactor.callFromThread(log, count, seconds)

    def _scan(self, progress=None, interval: float = _SCAN_PROGRESS_INTERVAL) -> list[str]:
        """
        Walk the root for layouts.  Blocking; runs once at start-up.

        @param progress: called as C{progress(count, seconds)} at most every
            C{interval} seconds while the walk goes on, so a slow storage
            root shows signs of life in the log.
        """
        found = []
        started = last = time.monotonic()
        for directory, subdirs, files in os.walk(self.root):
            if progress is not None:
                now = time.monotonic()
                if now - last >= interval:
                    last = now
                    progress(len(found), now - started)
            isLayout = "index.json" in files and "oci-layout" in files
            # A layout's own blobs/ and .uploads/ hold no repositories; a
            # directory named blobs elsewhere (say the repository "blobs")
            # may.
            subdirs[:] = [
                d
                for d in subdirs
                if not d.startswith(".") and not (isLayout and d in _NOT_REPOSITORIES)
            ]
            if isLayout and directory != self.root:
                name = os.path.relpath(directory, self.root).replace(os.sep, "/")
                try:
                    oci.validateName(name)
                except RegistryError:
                    continue
                found.append(name)
        return found

    # -- the repository journal --------------------------------------------------
    #
    # Several processes (workers) may serve one root.  Each keeps the catalog
    # in memory; a process that lays out a new repository appends its name
    # to a journal file, and the others read what was appended since they
    # last looked before answering a catalog request.  Appends of one short
    # line with O_APPEND land whole; a name seen twice is harmless.

    def _journalSize(self) -> int:
        try:
            return os.stat(self._journalPath).st_size
        except FileNotFoundError:
            return 0

    def _announce(self, name: str) -> None:
        """
        Blocking: record a newly laid-out repository in the journal.
        """
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self._journalPath, flags, 0o644)
        try:
            os.write(fd, name.encode("ascii") + b"\n")
        finally:
            os.close(fd)

    async def _readJournal(self) -> None:
        size = self._journalSize()
        if size <= self._journalOffset:
            return
        offset = self._journalOffset

        def read():
            with open(self._journalPath, "rb") as f:
                f.seek(offset)
                return f.read(size - offset)

        data = await self._runner.run(read)
        # Only whole lines; a line being written is picked up next time.
        complete = data[: data.rfind(b"\n") + 1]
        self._journalOffset = max(self._journalOffset, offset + len(complete))
        for line in complete.splitlines():
            try:
                name = oci.validateName(line.decode("ascii"))
            except (UnicodeDecodeError, RegistryError):
                continue
            if os.path.isfile(os.path.join(self._repoDir(name), "index.json")):
                self._noteRepository(name)

    def _noteRepository(self, name: str) -> None:
        if name not in self._repositorySet:
            self._repositorySet.add(name)
            bisect.insort(self._repositories, name)

    def _ensureLayout(self, name: str) -> None:
        """
        Make C{name} a valid, empty OCI layout if it is not one.  Blocking.
        """
        if name in self._layouts:
            return
        directory = self._repoDir(name)
        os.makedirs(directory, exist_ok=True)
        _createIfAbsent(os.path.join(directory, "oci-layout"), _LAYOUT)
        if _createIfAbsent(
            os.path.join(directory, "index.json"), json.dumps(_EMPTY_INDEX).encode()
        ):
            self._announce(name)
        # Set membership is atomic under the GIL; a repository, once laid
        # out, stays so while the process runs (nothing removes layouts).
        self._layouts.add(name)

    # -- repositories ---------------------------------------------------------

    async def catalog(self) -> list[str]:
        await self._readJournal()
        return list(self._repositories)

    async def repositoryExists(self, name: str) -> bool:
        return (await self._index(name)) is not None

    async def _index(self, name: str) -> RepositoryIndex | None:
        """
        The repository's parsed C{index.json}, brought up to date when the
        file changed (a C{stat} of it and of its journal, on the reactor
        thread, decide).

        A change this process wrote is applied to the copy when the write
        completes; a change another process wrote is replayed from the
        journal (L{zotwist.storage.journal}), and only a change nothing
        journaled costs a parse of the file.  While this process is writing
        the index, the file on disk runs ahead of the copy for a moment:
        answer from the copy (every change a client saw confirmed is in
        it).  Concurrent re-reads of one repository share a single parse.
        """
        directory = self._repoDir(name)
        path = os.path.join(directory, "index.json")
        journalPath = os.path.join(directory, journal.JOURNAL)
        while True:
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                self._indexes.pop(name, None)
                return None
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._indexes.get(name)
            if cached is not None:
                if cached.signature == signature and journal.isCurrent(
                    cached.position, journal.stamp(journalPath)
                ):
                    return cached
                if self._follow(name, cached, journalPath, _SYNC_JOURNAL_READ):
                    if cached.signature == signature:
                        return cached
                    cached = self._indexes.get(name)
                if cached is not None and name in self._indexWriting:
                    # Our own write is landing: its record comes with it.
                    return cached
            elif name in self._indexWriting:
                await self._whenWritten(name)
                continue
            waiting = Deferred()
            waiters = self._indexReloads.get(name)
            if waiters is not None:
                waiters.append(waiting)
            else:
                self._indexReloads[name] = [waiting]
                position = cached.position if cached is not None else None
                self._runner.run(
                    self._refreshBlocking, directory, position
                ).addBoth(self._reloaded, name)
            result = await waiting
            if result is None:
                return None
            if result.signature != signature:
                continue  # the file changed again meanwhile
            return result

    def _follow(self, name: str, cached: RepositoryIndex, journalPath: str, limit=None,
                read=None) -> bool:
        """
        Replay onto the readers' copy what the journal holds after it.

        @param read: records already read (C{(records, position)}), else
            they are read now (at most C{limit} bytes, on this thread).
        @return: whether the copy is still good (else it was dropped, and
            the file must be parsed).
        """
        if read is None:
            read = journal.read(journalPath, cached.position, limit)
            if read is None:
                return False  # too much to read here: the pool will
        records, position = read
        if not records:
            cached.position = position
            return True
        result = journal.replay(cached, cached.signature, position, records)
        if result is None:
            self._indexes.pop(name, None)
            return False
        cached.signature, cached.position = result
        return True

    def _refreshBlocking(self, directory: str, position):
        """
        Blocking, under the index lock held shared (so no write of this
        registry is half done): the journal's records after C{position}
        when there is a copy to bring forward, else the parsed file.

        @return: C{("records", signature, (records, position))},
            C{("index", RepositoryIndex)} or L{None} (no index).
        """
        path = os.path.join(directory, "index.json")
        journalPath = os.path.join(directory, journal.JOURNAL)
        with sharedFileLock(os.path.join(directory, ".index.lock")):
            if position is not None:
                try:
                    st = os.stat(path)
                except (FileNotFoundError, NotADirectoryError):
                    return None
                signature = (st.st_ino, st.st_mtime_ns, st.st_size)
                return "records", signature, position, journal.read(journalPath, position)
            return "index", self._readIndex(path, journalPath)

    def _reloaded(self, result, name: str) -> None:
        if isinstance(result, tuple) and result[0] == "records":
            _, signature, start, read = result
            cached = self._indexes.get(name)
            if cached is not None and cached.position != start:
                # The copy moved on meanwhile (a write of ours landed):
                # the caller looks again.
                result = cached
            elif cached is not None and self._follow(
                name, cached, None, read=read
            ) and cached.signature == signature:
                result = cached
            else:
                # Something wrote the file without a journal record: parse
                # it, once more through the pool (the waiters keep waiting).
                self._indexes.pop(name, None)
                self._runner.run(
                    self._refreshBlocking, self._repoDir(name), None
                ).addBoth(self._reloaded, name)
                return
        elif isinstance(result, tuple):
            result = result[1]
        waiters = self._indexReloads.pop(name, [])
        if isinstance(result, RepositoryIndex):
            if self._indexes.get(name) is None:
                self._indexes[name] = result
            elif self._indexes[name] is not result:
                if self._indexes[name].signature != result.signature:
                    self._indexes[name] = result
            self._noteRepository(name)
        for waiting in waiters:
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)

    def _whenWritten(self, name: str) -> Deferred:
        d = Deferred()
        self._indexWaiters.setdefault(name, []).append(d)
        return d

    def _readManifests(self, path: str):
        """
        Blocking: C{(signature, manifests)} of C{index.json}, or L{None}
        when there is none.  An unreadable file counts as empty.
        """
        def parse(data: bytes) -> list:
            document = json.loads(data)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            manifests = document.get("manifests") or []
            if not isinstance(manifests, list):
                raise ValueError("manifests is not a list")
            return manifests

        try:
            st, manifests = syncer.readWithFallback(path, parse)
        except FileNotFoundError:
            return None
        except ValueError:
            self._log.error("Unreadable index {path}; treating it as empty", path=path)
            manifests = []
            st = os.stat(path)
        manifests = [m for m in manifests if isinstance(m, dict)]
        return (st.st_ino, st.st_mtime_ns, st.st_size), manifests

    def _readIndex(self, path: str, journalPath: str | None = None) -> RepositoryIndex | None:
        """
        Blocking: the readers' copy of C{index.json}, placed in its journal
        (where the journal ended before the file was read, unsynced).
        """
        position = journal.positionNow(journalPath) if journalPath else journal.START
        read = self._readManifests(path)
        if read is None:
            return None
        index = RepositoryIndex.fromManifests(*read)
        index.position = position
        return index

    async def _mutateIndex(self, name: str, change, precheck=None):
        """
        Apply C{change(entries) -> (changed, result)} (an L{IndexEntries} it
        may modify) to the repository's index under the cross-process lock,
        in the disk pool.

        Changes to one repository are committed in groups: while one write
        of C{index.json} is in flight, the changes that arrive queue up and
        the next write applies them all, in order, with one trip to the
        pool.  Sixteen clients pushing to one repository cost a handful of
        index rewrites, not sixteen.

        @param precheck: blocking work to do first, in the pool but before
            the lock is taken (storing a manifest's bytes); what it raises
            fails this change only.
        @return: C{result}, or raise what C{change} (or C{precheck}) raised.
        """
        waiting = Deferred()
        self._indexQueues.setdefault(name, []).append((precheck, change, waiting))
        if name not in self._indexWriting:
            self._indexWriting.add(name)
            self._writeQueuedChanges(name)
        return await waiting

    def _writeQueuedChanges(self, name: str) -> None:
        batch = self._indexQueues.pop(name, None)
        if not batch:
            self._indexWriting.discard(name)
            for waiting in self._indexWaiters.pop(name, []):
                waiting.callback(None)
            return
        items = [(precheck, change) for precheck, change, _ in batch]
        d = self._runner.run(self._mutateBlocking, name, items, name not in self._indexes)

        def written(result):
            commit, outcomes = result
            if commit is not None:
                self._committed(name, *commit)
            for (_, _, waiting), (ok, value) in zip(batch, outcomes):
                if ok:
                    waiting.callback(value)
                else:
                    waiting.errback(value)

        def failed(failure):
            for _, _, waiting in batch:
                waiting.errback(failure)

        d.addCallbacks(written, failed)
        d.addBoth(lambda _: self._writeQueuedChanges(name))

    def _committed(self, name, before, start, after, end, operations, built) -> None:
        """
        On the reactor thread: this process changed the index from the
        file of signature C{before} (journal position C{start}) to C{after}
        (C{end}) by C{operations}; bring the readers' copy along.
        """
        self._noteRepository(name)
        cached = self._indexes.get(name)
        if cached is None:
            if built is not None:
                self._indexes[name] = built
            return
        if cached.signature == before and journal.samePlace(cached.position, start):
            cached.apply(operations, after)
            cached.position = end
        # Else the copy is behind (another process wrote meanwhile) or
        # ahead (it replayed this very record): the next read follows the
        # journal.

    def _mutateBlocking(self, name: str, items, buildReader: bool):
        """
        Blocking: run the prechecks; then lock, bring the writer's entries
        up to date (the journal, else the file), apply every change, write
        the file and its journal record once.

        @return: C{(commit, outcomes)}: what L{_committed} needs, or L{None}
            when nothing changed; one C{(ok, result or Failure)} per item.
        """
        outcomes: list = [None] * len(items)
        live = []
        for i, (precheck, _) in enumerate(items):
            if precheck is not None:
                try:
                    precheck()
                except Exception:
                    outcomes[i] = (False, Failure())
                    continue
            live.append(i)
        if not live:
            return None, outcomes
        self._ensureLayout(name)
        directory = self._repoDir(name)
        path = os.path.join(directory, "index.json")
        journalPath = os.path.join(directory, journal.JOURNAL)
        with fileLock(os.path.join(directory, ".index.lock")):
            try:
                st = os.stat(path)
                signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                signature = None
            # The writer's entries, changed in place, when they describe the
            # file (nobody else wrote it since, or the journal says how);
            # else the file is parsed.
            entries = None
            kept = self._writerEntries.pop(name, None)
            if kept is not None:
                known, entries, position = kept
                if known != signature or not journal.isCurrent(
                    position, journal.stamp(journalPath)
                ):
                    records, end = journal.read(journalPath, position)
                    result = journal.replay(entries, known, end, records)
                    if result is None or result[0] != signature:
                        entries = None
                    else:
                        known, position = result
            if entries is None:
                position = journal.positionNow(journalPath)
                current = self._readManifests(path)
                known, manifests = current if current is not None else (None, [])
                entries = IndexEntries.fromManifests(manifests)
            operations = entries.recording()
            changed = False
            try:
                for i in live:
                    try:
                        didChange, result = items[i][1](entries)
                    except Exception:
                        outcomes[i] = (False, Failure())
                        continue
                    changed = changed or didChange
                    outcomes[i] = (True, result)
            finally:
                entries.stopRecording()
            if not changed:
                self._writerEntries[name] = (known, entries, position)
                return None, outcomes
            st = _writeAtomically(path, entries.chunks(), self._commit, exchange=True)
            if not self._commit:
                self._lazySync.changed(path)
            written = (st.st_ino, st.st_mtime_ns, st.st_size)
            try:
                end = journal.append(journalPath, known, written, operations)
            except OSError as e:
                # The file is written: the change stands; other processes
                # will parse the file, having no record to replay.
                self._log.error("Cannot append to {path}: {e}", path=journalPath, e=e)
                end = journal.positionNow(journalPath)
            self._writerEntries[name] = (written, entries, end)
            built = None
            if buildReader:
                built = RepositoryIndex.fromManifests(written, entries.manifests())
                built.position = end
            return (known, position, written, end, operations, built), outcomes

    # -- blobs ------------------------------------------------------------------

    def _touch(self, path: str, st: os.stat_result) -> bool:
        """
        Refresh C{path}'s mtime if it is older than L{touchAfter} (one
        C{utime} per blob per C{touchAfter} at most).

        @return: false when the file vanished meanwhile (the collector took
            it): the caller treats the blob as missing.
        """
        touchAfter = self.touchAfter
        if touchAfter is None or time.time() - st.st_mtime <= touchAfter:
            return True
        try:
            os.utime(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            pass  # a read-only root: nothing collects there either
        return True

    async def statBlob(self, name: str, digest: str) -> int | None:
        path = self._blobPath(name, digest)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not self._touch(path, st):
            return None
        return st.st_size

    async def openBlob(self, name: str, digest: str) -> LocalBlobReader:
        path = self._blobPath(name, digest)

        def open_():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            self._touch(path, st)
            return fd, st.st_size

        try:
            fd, size = await self._runner.run(open_)
        except (FileNotFoundError, NotADirectoryError):
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        return LocalBlobReader(self._runner, fd, size)

    async def deleteBlob(self, name: str, digest: str) -> None:
        path = self._blobPath(name, digest)
        try:
            await self._runner.run(os.unlink, path)
        except (FileNotFoundError, NotADirectoryError):
            raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
        if self._dedupe is not None:
            await self._runner.run(self._dedupe.removed, name, digest)

    async def mountBlob(
        self, name: str, digest: str, fromName: str | None, mayRead=None
    ) -> int | None:
        target = self._blobPath(name, digest)
        existing = await self.statBlob(name, digest)
        if existing is not None:
            return existing
        if fromName is not None:
            candidates = [fromName]
        elif self._dedupe is not None and self._dedupe.ready:
            # The blob index names the holders: no walk over every repository.
            holders = await self._runner.run(self._dedupe.holders, digest, None, name)
            candidates = [repo for repo, _, _ in holders]
        else:
            candidates = list(self._repositories)
        if mayRead is not None:
            candidates = [c for c in candidates if mayRead(c)]
        sources = [self._blobPath(c, digest) for c in candidates if c != name]
        size = await self._runner.run(self._linkFirst, name, digest, sources, target)
        if size is not None:
            self._noteRepository(name)
        return size

    def _linkFirst(
        self, name: str, digest: str, sources: list[str], target: str
    ) -> int | None:
        for source in sources:
            if os.path.isfile(source):
                self._ensureLayout(name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self._publish(source, target, keepSource=True)
                if self._dedupe is not None:
                    self._dedupe.recorded(name, digest)
                if self.touchAfter is not None:
                    # A link shares the source's (maybe old) mtime: the
                    # mounted blob is new here, and must not look stale.
                    try:
                        os.utime(target)
                    except OSError:
                        pass
                return os.stat(target).st_size
        return None

    def _publishBlob(self, name: str, digest: str, source: str, target: str) -> None:
        """
        Publish a verified upload: a hard link to the copy another
        repository holds when dedupe links, else L{_publish} by rename.
        Blocking.
        """
        dedupe = self._dedupe
        if dedupe is None:
            self._publish(source, target, keepSource=False)
            return
        size = os.stat(source).st_size
        with dedupe.lockFor(digest):
            if dedupe.linkInto(name, digest, size, target):
                os.unlink(source)
                # The link shares the other copy's (maybe old) mtime; the
                # blob is new in this repository and must not look stale
                # to the garbage collector before its manifest arrives.
                _freshen(target)
                return
            self._publish(source, target, keepSource=False)
            dedupe.recorded(name, digest)

    def _publish(self, source: str, target: str, keepSource: bool) -> None:
        """
        Put C{source}'s content under C{target} atomically: a hard link when
        the source must stay (a mount), else a rename; a copy when the
        filesystem cannot link or dedupe is off.  Blocking.
        """
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not keepSource:
            if self._commit:
                fd = os.open(source, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(source, target)
            return
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        if self._dedupe is None or self._dedupe.linking:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
        else:
            shutil.copyfile(source, tmp)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise

    # -- uploads ---------------------------------------------------------------

    async def startUpload(self, name: str, algorithm: str) -> str:
        oci.validateAlgorithm(algorithm)
        uploadID = uuid.uuid4().hex
        directory = self._uploadDir(name, uploadID)

        def create():
            os.makedirs(directory)
            open(os.path.join(directory, "data"), "wb").close()
            _writeAtomically(
                os.path.join(directory, "meta.json"),
                json.dumps({"algorithm": algorithm, "repository": name}).encode(),
                False,
            )

        await self._runner.run(create)
        self._sessions[(name, uploadID)] = SessionState.fresh(algorithm)
        return uploadID

    def _session(self, name: str, uploadID: str) -> tuple[str, SessionState]:
        """
        The session's directory and in-memory state, loaded from its
        C{meta.json} after a restart.  Small synchronous reads.
        """
        directory = self._uploadDir(name, uploadID)
        key = (name, uploadID)
        state = self._sessions.get(key)
        if state is not None and os.path.isdir(directory):
            return directory, state
        try:
            with open(os.path.join(directory, "meta.json"), "rb") as f:
                meta = json.loads(f.read())
            algorithm = oci.validateAlgorithm(meta["algorithm"])
        except (OSError, ValueError, KeyError, TypeError, RegistryError):
            self._sessions.pop(key, None)
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})
        state = self._sessions[key] = SessionState.fresh(algorithm)
        return directory, state

    async def uploadStatus(self, name: str, uploadID: str) -> int:
        directory, _ = self._session(name, uploadID)
        try:
            return os.stat(os.path.join(directory, "data")).st_size
        except FileNotFoundError:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})

    async def cancelUpload(self, name: str, uploadID: str) -> None:
        directory, _ = self._session(name, uploadID)
        self._sessions.pop((name, uploadID), None)
        await self._runner.run(shutil.rmtree, directory, True)

    def writerForSession(self, name: str, uploadID: str, start, length) -> AppendWriter:
        directory, state = self._session(name, uploadID)
        try:
            return AppendWriter(
                self._uploadRunner, os.path.join(directory, "data"), state, start, length
            )
        except FileNotFoundError:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": uploadID})

    def writerForMonolithic(self, name: str, algorithm: str, length) -> FreshWriter:
        oci.validateAlgorithm(algorithm)
        return FreshWriter(
            self._uploadRunner, self._uploadDir(name, uuid.uuid4().hex), algorithm
        )

    async def completeUpload(self, name: str, uploadID: str, digest: str, writer) -> int:
        algorithm, _ = oci.parseDigest(digest)
        directory, state = self._session(name, uploadID)
        if writer is not None:
            await writer.flushed()
            if writer.rejection is not None:
                raise writer.rejection
            await writer.ensureCaughtUp()
        dataPath = os.path.join(directory, "data")
        target = self._blobPath(name, digest)

        def finish():
            if writer is None:
                with fileLock(dataPath):
                    fd = os.open(dataPath, os.O_RDONLY)
                    try:
                        state.catchUp(fd, os.fstat(fd).st_size)
                    finally:
                        os.close(fd)
            size = os.stat(dataPath).st_size
            if algorithm == state.algorithm and state.hashedSize == size:
                actual = state.digest()
            else:
                actual, size = hashFile(dataPath, algorithm)
            if actual != digest:
                raise RegistryError(
                    "DIGEST_INVALID", detail={"expected": digest, "actual": actual}
                )
            self._ensureLayout(name)
            self._publishBlob(name, digest, dataPath, target)
            shutil.rmtree(directory, True)
            return size

        size = await self._runner.run(finish)
        self._sessions.pop((name, uploadID), None)
        self._noteRepository(name)
        return size

    async def commitMonolithic(self, name: str, digest: str, writer: FreshWriter) -> int:
        oci.parseDigest(digest)
        await writer.flushed()
        actual = writer.state.digest()
        if actual != digest:
            raise RegistryError("DIGEST_INVALID", detail={"expected": digest, "actual": actual})
        target = self._blobPath(name, digest)

        def publish():
            self._ensureLayout(name)
            self._publishBlob(name, digest, writer.path, target)
            writer.committed = True
            shutil.rmtree(writer.directory, True)

        await self._runner.run(publish)
        self._noteRepository(name)
        return writer.written

    # -- manifests --------------------------------------------------------------

    async def _requireIndex(self, name: str) -> RepositoryIndex:
        return manifestlogic.requireRepository(await self._index(name), name)

    async def statManifest(self, name: str, reference: str):
        index = await self._requireIndex(name)
        return await manifestlogic.statOf(index, reference, lambda d: self.statBlob(name, d))

    async def getManifest(self, name: str, reference: str):
        index = await self._requireIndex(name)
        body, mediaType, digest = await self.manifests.read(name, index, reference)
        self.tagTimes.pulled(name, manifestlogic.pulledKeys(reference, digest))
        return body, mediaType, digest

    async def _loadManifest(self, name: str, digest: str) -> bytes | None:
        """
        A manifest's bytes for L{ManifestCache}, read from its blob file in
        the disk pool; only when they have the digest.
        """
        path = self._blobPath(name, digest)

        def read():
            try:
                with open(path, "rb") as f:
                    return f.read()
            except (FileNotFoundError, NotADirectoryError):
                return None

        body = await self._runner.run(read)
        return body if manifestlogic.holdsDigest(body, digest) else None

    async def putManifest(self, name: str, body: bytes, contentType, reference: str, tags):
        digest, tags = manifestlogic.pushTarget(body, reference, tags)
        info = await manifestlogic.parsePushed(self._runner, body, contentType, digest)
        known: dict = {}
        if info.children:
            # Children this index lists are already known as manifests:
            # their bytes need no check before the lock.
            index = await self._index(name)
            if index is not None:
                known = index.byDigest
        needed = [
            (d, self._blobPath(name, d)) for d in manifestlogic.neededDigests(info, known)
        ]
        allNeeded = [
            (d, self._blobPath(name, d)) for d in manifestlogic.referencedDigests(info)
        ]
        path = self._blobPath(name, digest)

        def checkAndStore():
            """
            Blocking, before the index lock: refuse if a referenced blob is
            missing, else store the manifest's bytes as a blob of the
            layout.
            """
            manifestlogic.refuseAbsent([d for d, p in needed if not os.path.isfile(p)])
            self._ensureLayout(name)
            if os.path.isfile(path):
                return
            dedupe = self._dedupe
            if dedupe is None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _writeAtomically(path, body, self._commit)
                return
            with dedupe.lockFor(digest):
                if dedupe.linkInto(name, digest, len(body), path):
                    _freshen(path)  # new here: its age starts now, for GC
                else:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    _writeAtomically(path, body, self._commit)
                    dedupe.recorded(name, digest)

        descriptor = manifestlogic.descriptorFor(info, digest, len(body))

        def change(entries):
            # Under the index lock, where the garbage collector decides too:
            # what this manifest needs must still be there now, and becomes
            # referenced before the lock is released (zotwist.storage.gc).
            absent = []
            for d, p in allNeeded:
                try:
                    st = os.stat(p)
                except (FileNotFoundError, NotADirectoryError):
                    absent.append(d)
                    continue
                if not self._touch(p, st):
                    absent.append(d)
            manifestlogic.refuseAbsent(absent)
            try:
                own = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                own = None
            if own is None or not self._touch(path, own):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _writeAtomically(path, body, self._commit)
            if not tags:
                return entries.add(descriptor), None
            for tag in tags:
                entries.tag(tag, descriptor)
            return True, None

        await self._mutateIndex(name, change, checkAndStore)
        self.manifests.remember(digest, body, info)
        self.tagTimes.pushed(name, [*tags, digest])
        return info

    async def deleteManifest(self, name: str, reference: str) -> None:
        manifestlogic.requireDescriptor(await self._requireIndex(name), reference)
        byDigest = oci.looksLikeDigest(reference)

        def change(entries):
            if byDigest:
                found = entries.removeDigest(reference)
            else:
                found = entries.untag(reference)
            return found, found

        changed = await self._mutateIndex(name, change)
        if not changed:
            raise manifestlogic.unknownManifest(reference)

    async def listTags(self, name: str) -> list[str]:
        index = await self._requireIndex(name)
        return list(index.sortedTags())

    async def referrers(self, name: str, digest: str) -> list[ManifestInfo]:
        oci.parseDigest(digest)
        index = await self._index(name)
        if index is None:
            return []
        return await self.manifests.referrers(name, index, digest)
