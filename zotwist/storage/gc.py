# -*- test-case-name: tests.test_gc -*-
"""
Online garbage collection of the local store, and clean-up of stale uploads.

What goes, per repository (zot's C{storage.gc}, C{gcDelay}, C{gcInterval}):
 - untagged manifests older than C{gcDelay} (the mtime of their blob) that
   no live index lists as a child;
 - untagged referrers (manifests with a C{subject}) older than C{gcDelay}
   whose subject is not a live manifest of the repository; a referrer whose
   subject is live stays, tagged or not (signatures and SBOMs are untagged);
 - blob files that no live manifest references (config, layers, C{blobs},
   children, and the manifests' own bytes) and whose mtime is older than
   C{gcDelay}; and temporary files a crash left in C{blobs/} or beside
   C{index.json};
 - upload session directories under C{.uploads/} untouched (directory,
   C{data}, C{meta.json}) for longer than C{gcDelay}.

With C{storage.retention}, each repository's sweep first applies its
policy (L{zotwist.storage.retention}) under the same lock: tags its
C{keepTags} do not keep go, and C{deleteUntagged}, C{deleteReferrers} and
C{retention.delay} replace the defaults above for untagged manifests and
referrers; a dry run changes nothing and logs what would go.  One log line
per tag or manifest removed.

"Live" is everything reachable from a root: a tagged entry of C{index.json},
or an untagged entry younger than C{gcDelay}; through index children; and
referrers of live manifests, to a fixed point.  A live manifest whose bytes
cannot be read leaves its references unknown: the repository's blobs are
then left alone that round (and the problem logged).

Safety, the point of doing this while pushes go on:
 1. The collector decides and deletes while holding the repository's
    C{.index.lock} (L{zotwist.storage.locks.fileLock}), the lock every
    C{index.json} change takes.  It rewrites C{index.json} first and deletes
    files after, so a crash never leaves an index entry without its bytes.
 2. A manifest PUT re-checks, inside its index change (under that lock),
    that every blob and child it references exists, and re-writes its own
    bytes if they vanished.  So a PUT either finds its blobs there and makes
    them referenced before the lock is released, or fails cleanly with
    C{MANIFEST_BLOB_UNKNOWN}; it never returns 201 for a broken image.
 3. Age is refreshed by use: blob HEAD and GET, a cross-repository mount
    and a manifest PUT C{utime} the blob when its mtime is older than half of
    C{gcDelay} (L{zotwist.storage.local.LocalStore.touchAfter}), so a blob a
    client has just seen is not collected before its manifest arrives.  The
    collector deletes a file by renaming it aside first and looking at the
    renamed file's mtime: touched since the decision, it is linked back.  A
    HEAD that says 200 is therefore never followed by the collector removing
    that blob within C{gcDelay / 2}.

Blob uploads do not take the lock: a blob finished during a collection has a
fresh mtime and is younger than C{gcDelay}, so it survives.  Whatever puts a
blob in place by hard link (a mount, a deduplicated upload) must C{utime} it,
as the link shares its source's possibly old mtime.

Limits: one image's blobs must all be pushed within C{gcDelay} of the first
(zot has the same rule); a C{SIGKILL} between the rename aside and the link
back loses a blob a client had just HEADed, and that client's manifest PUT
then fails cleanly.  The lock is held while a repository's manifests are
read, so pushes into a repository with very many manifests wait that long.
(Measured: 1,000 repositories of 3 images each, 0.35 s a round with nothing
to remove, 2 s removing 1,000 manifests and 3,000 blobs.)
"""

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field

from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zotwist import oci
from zotwist.errors import RegistryError
from zotwist.storage.index import IndexEntries, _tagOf
from zotwist.storage.locks import fileLock
from zotwist.storage.retention import (
    REFERRERS_ALL,
    REFERRERS_KEEP,
    RepositoryRules,
    needsTimes,
    rulesFor,
)

_log = Logger()


@dataclass
class CollectionResult:
    """
    What one collection of one repository removed.

    @ivar manifests: digests of the manifests removed from C{index.json}.
    @ivar blobs: digests of the blob files deleted (manifests' bytes included).
    @ivar bytes: bytes freed by deleting blobs.
    @ivar uploads: upload session directories removed.
    @ivar temporary: leftover temporary files removed.
    @ivar skipped: why blobs were left alone, or L{None}.
    @ivar tags: the tags retention removed.
    @ivar events: C{(kind, reference, reason)} per tag (C{"tag"}) or
        manifest (C{"manifest"}) removed, or that a dry run would remove.
    @ivar dryRun: the events are what a dry run would have removed.
    """

    manifests: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    events: list = field(default_factory=list)
    dryRun: bool = False
    blobs: list = field(default_factory=list)
    bytes: int = 0
    uploads: int = 0
    temporary: int = 0
    skipped: str | None = None

    def add(self, other: "CollectionResult") -> None:
        self.manifests += other.manifests
        self.tags += other.tags
        self.blobs += other.blobs
        self.bytes += other.bytes
        self.uploads += other.uploads
        self.temporary += other.temporary

    def removedAnything(self) -> bool:
        return bool(self.manifests or self.tags or self.blobs or self.uploads or self.temporary)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None


def _validDigest(value) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        oci.parseDigest(value)
    except RegistryError:
        return None
    return value


def manifestReferences(body: bytes):
    """
    What a manifest's bytes reference, read leniently (any descriptor
    anywhere a manifest may hold one, non-distributable layers included):
    more is kept, never less.

    @return: C{(blobs, children, subject)}: two lists of digests and a
        digest or L{None}; or L{None} when the bytes are not a JSON object.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None

    def digestsOf(value) -> list:
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            return []
        found = []
        for item in value:
            if isinstance(item, dict):
                digest = _validDigest(item.get("digest"))
                if digest is not None:
                    found.append(digest)
        return found

    blobs = digestsOf(document.get("config")) + digestsOf(document.get("layers"))
    blobs += digestsOf(document.get("blobs"))
    children = digestsOf(document.get("manifests"))
    subject = digestsOf(document.get("subject"))
    return blobs, children, (subject[0] if subject else None)


def removeIfStale(path: str, cutoff: float) -> int | None:
    """
    Delete the file at C{path} if its mtime is before C{cutoff}, safely
    against a concurrent C{utime}: rename it aside, look at the renamed
    file, and link it back if it was touched.  Blocking.

    @return: the bytes freed, or L{None} when nothing was deleted.
    """
    trash = f"{path}.gc-{os.getpid()}.tmp"
    try:
        os.rename(path, trash)
    except (FileNotFoundError, NotADirectoryError):
        return None
    st = os.stat(trash)
    if st.st_mtime >= cutoff:
        try:
            os.link(trash, path)
        except FileExistsError:
            pass  # a newer copy was published meanwhile
        except OSError:
            if not os.path.exists(path):
                os.rename(trash, path)
                return None
        os.unlink(trash)
        return None
    os.unlink(trash)
    return st.st_size


def _isTemporary(filename: str) -> bool:
    return filename.endswith(".tmp")


class _Reachability:
    """
    What is reachable from a set of manifests: the manifests (through index
    children) and every blob they reference.
    """

    def __init__(self, referencesOf):
        self.referencesOf = referencesOf
        self.live: set[str] = set()
        self.blobs: set[str] = set()
        self.unknown: list[str] = []

    def mark(self, digest: str) -> None:
        stack = [digest]
        while stack:
            current = stack.pop()
            if current in self.live:
                continue
            self.live.add(current)
            self.blobs.add(current)
            refs = self.referencesOf(current)
            if refs is None:
                self.unknown.append(current)
                continue
            self.blobs.update(refs[0])
            stack.extend(refs[1])


def _dropTag(entries: IndexEntries, tag: str, tags: dict, naming: Counter) -> None:
    """
    Remove C{tag} (a key of C{tags}, C{{tag: digest}} of the tags still
    there; C{naming} counts the tags naming each digest); its manifest
    leaves C{index.json} too when no other tag names it (zot's retention
    removes the descriptor, not only the annotation).
    """
    digest = tags.pop(tag)
    naming[digest] -= 1
    if naming[digest] > 0:
        entries.untag(tag)
    else:
        entries.removeDigest(digest)


def _decideManifests(entries: IndexEntries, rules: RepositoryRules, referencesOf, ageOf):
    """
    Which manifests of C{entries} go under C{rules}, and what is reachable
    from the rest.

    @param referencesOf: C{digest -> (blobs, children, subject)} or L{None}
        (see L{manifestReferences}).
    @param ageOf: C{digest -> time} the manifest's bytes were last written
        or used, or L{None} when they are missing.
    @return: C{(dead, reach)}: C{{digest: reason}} and a L{_Reachability}.
    """
    tagged = set()
    untagged = set()
    for entry in entries.manifests():
        digest = _validDigest(entry.get("digest"))
        if digest is None:
            continue
        (tagged if _tagOf(entry) is not None else untagged).add(digest)
    untagged -= tagged

    def old(digest: str) -> bool:
        # Young, or bytes missing (damage for the scrub to report, not
        # garbage): kept.
        mtime = ageOf(digest)
        return mtime is not None and mtime < rules.cutoff

    def subjectOf(digest: str):
        refs = referencesOf(digest)
        return None if refs is None else refs[2]

    roots = set()
    candidates: dict[str, str | None] = {}  # digest -> its subject, or None
    for digest in tagged:
        if rules.referrers == REFERRERS_ALL and subjectOf(digest) is not None and old(digest):
            candidates[digest] = subjectOf(digest)
        else:
            roots.add(digest)
    for digest in untagged:
        if not old(digest):
            roots.add(digest)
            continue
        subject = subjectOf(digest)
        if subject is not None:
            if rules.referrers == REFERRERS_KEEP:
                roots.add(digest)
            else:
                candidates[digest] = subject
        elif rules.deleteUntagged:
            candidates[digest] = None
        else:
            roots.add(digest)

    reach = _Reachability(referencesOf)
    for digest in roots:
        reach.mark(digest)
    # Referrers of live manifests live too, to a fixed point.
    pending = {d: s for d, s in candidates.items() if s is not None}
    changed = True
    while changed:
        changed = False
        for digest, subject in list(pending.items()):
            if digest in reach.live:
                del pending[digest]
            elif subject in reach.live:
                reach.mark(digest)
                del pending[digest]
                changed = True
    dead = {}
    for digest in sorted(candidates):
        if digest in reach.live:
            continue
        subject = candidates[digest]
        dead[digest] = "untagged" if subject is None else f"referrer of {subject}, which is gone"
    return dead, reach


@dataclass
class RepositoryPlan:
    """
    What a repository's sweep removes from its index (L{planRepository}).

    @ivar dropped: C{{tag: digest}} of the tags retention removes, each
        with the manifest it named.
    @ivar dead: C{{digest: reason}} of the untagged manifests and orphaned
        referrers that go.
    @ivar reach: what the entries left reach (L{_Reachability}): the blobs
        the sweep keeps.
    @ivar events: C{(kind, reference, reason)}, tags first (see
        L{CollectionResult.events}).
    """

    dropped: dict
    dead: dict
    reach: "_Reachability"
    events: list

    def changes(self) -> bool:
        return bool(self.dropped or self.dead)


def planRepository(work: IndexEntries, rules: RepositoryRules, referencesOf,
                   ageOf) -> RepositoryPlan:
    """
    Decide one repository's sweep under C{rules} and apply it to C{work}
    (the index entries as read under the repository's lock, or a copy of
    them for a dry run): the tags its retention policy removes (a tag's
    unrecorded push time is its manifest's age), then the untagged
    manifests and orphaned referrers that go.  Shared by the local and the
    S3 collector, which differ only in how they read and write.

    @param referencesOf: see L{_decideManifests}; synchronous (the S3
        collector reads the manifests first).
    @param ageOf: see L{_decideManifests}.
    """
    tags = {}
    for entry in work.manifests():
        tag = _tagOf(entry)
        digest = _validDigest(entry.get("digest"))
        if tag is not None and digest is not None:
            tags[tag] = digest
    decision = rules.decide(dict(tags), ageOf)
    naming = Counter(tags.values())
    dropped = {}
    events = []
    for tag, why in decision.delete.items():
        events.append(("tag", tag, why))
        dropped[tag] = tags[tag]
        _dropTag(work, tag, tags, naming)
    dead, reach = _decideManifests(work, rules, referencesOf, ageOf)
    for digest, why in dead.items():
        work.removeDigest(digest)
        events.append(("manifest", digest, why))
    return RepositoryPlan(dropped, dead, reach, events)


def reachableFrom(entries: IndexEntries, referencesOf) -> "_Reachability":
    """
    What every manifest C{entries} list reaches: the blobs a dry run keeps
    (it removes no manifest, so their blobs are not garbage).
    """
    reach = _Reachability(referencesOf)
    for entry in entries.manifests():
        digest = _validDigest(entry.get("digest"))
        if digest is not None:
            reach.mark(digest)
    return reach


def leftAlone(repo: str, reach: "_Reachability", result: CollectionResult, log) -> bool:
    """
    Whether a sweep must leave the repository's blobs alone this round:
    some live manifest's bytes could not be read, so what it references is
    unknown.  Then C{result.skipped} says which, and the reason is logged
    (on C{log}, the collector's logger).
    """
    if not reach.unknown:
        return False
    result.skipped = "unreadable manifests " + ", ".join(sorted(reach.unknown)[:5])
    log.warn("GC: {repo}: {why}; its blobs are left alone", repo=repo, why=result.skipped)
    return True


async def sweepRules(store, retention, name: str, now: float, delay: float) -> RepositoryRules:
    """
    The retention rules of one repository's sweep (L{rulesFor}), with its
    recorded push and pull times (C{store.tagTimes}) when its policy needs
    them, and the tags they describe.  Shared by the local and the S3
    collector.

    The index is read first, then the times: a tag the sweep finds as it
    was here has its push time (written before the index change); a push
    that lands between the two changes the index the sweep reads, so the
    sweep leaves its tag alone (L{RepositoryRules.seen}).
    """
    times = seen = None
    if retention is not None and needsTimes(retention, name):
        index = await store._index(name)
        seen = {} if index is None else {
            tag: entry.get("digest") for tag, entry in index.tags.items()
        }
        times = await store.tagTimes.times(name)
    return rulesFor(retention, name, now, delay, times, seen)


async def collectRound(collector, total: CollectionResult, started: float, log,
                       leading=lambda: True) -> CollectionResult:
    """
    The repositories' part of one round of a collector (local or S3): each
    repository of the store's catalog in turn, until the collector is
    C{stopping} or C{leading()} turns false; a failure in one is logged and
    the others go on.  Then the round is counted (C{removed}, C{rounds},
    C{onRound}).

    @param collector: has C{store}, C{stopping}, C{removed}, C{rounds},
        C{onRound}, C{collectRepository(name)} and C{logRemoved(name,
        result)} (each collector words its own summary).
    @param total: what the round removed so far (the S3 collector's stale
        uploads), added to.
    @param started: C{time.monotonic()} when the round started.
    @param log: the collector's logger.
    """
    names = await collector.store.catalog()
    for name in names:
        if collector.stopping or not leading():
            break
        try:
            result = await collector.collectRepository(name)
        except Exception:
            log.failure("GC of repository {repo} failed", repo=name)
            continue
        if result.removedAnything():
            collector.logRemoved(name, result)
        total.add(result)
    collector.removed.add(total)
    collector.rounds += 1
    if collector.onRound is not None:
        collector.onRound(total)
    log.debug(
        "GC of {count} repositories took {seconds:.2f} s",
        count=len(names), seconds=time.monotonic() - started,
    )
    return total


def collectRepositoryBlocking(
    repoDir: str, cutoff: float, commit: bool = False, log=_log,
    rules: RepositoryRules | None = None,
) -> CollectionResult:
    """
    Collect one repository's garbage: blobs and uploads older than
    C{cutoff} (a C{time.time()} value, now minus C{gcDelay}), and the tags
    and manifests C{rules} remove (by default: untagged manifests and
    untagged referrers whose subject is gone, older than C{cutoff}).
    Blocking: run it in the disk pool.
    """
    # Imported here: local.py imports this module's neighbours, not this one.
    from zotwist.storage.local import _writeAtomically

    if rules is None:
        rules = RepositoryRules(cutoff=cutoff)
    result = CollectionResult()
    result.uploads = cleanUploadsBlocking(repoDir, cutoff)
    indexPath = os.path.join(repoDir, "index.json")
    if not os.path.isfile(indexPath):
        return result
    with fileLock(os.path.join(repoDir, ".index.lock")):
        try:
            with open(indexPath, "rb") as f:
                document = json.loads(f.read())
            manifests = document.get("manifests") or []
            if not isinstance(manifests, list):
                raise ValueError("manifests is not a list")
        except (OSError, ValueError) as e:
            result.skipped = f"unreadable index.json: {e}"
            log.error("GC: {repo}: {why}; left alone", repo=repoDir, why=result.skipped)
            return result
        entries = IndexEntries.fromManifests(manifests)
        # A dry run decides on a copy and leaves the index as it is.
        work = IndexEntries.fromManifests(manifests) if rules.dryRun else entries

        def blobPath(digest: str) -> str:
            algorithm, encoded = oci.parseDigest(digest)
            return os.path.join(repoDir, "blobs", algorithm, encoded)

        references: dict[str, tuple | None] = {}

        def referencesOf(digest: str):
            if digest not in references:
                try:
                    with open(blobPath(digest), "rb") as f:
                        body = f.read()
                except (OSError, RegistryError):
                    body = None
                references[digest] = None if body is None else manifestReferences(body)
            return references[digest]

        plan = planRepository(work, rules, referencesOf, lambda digest: _mtime(blobPath(digest)))
        result.events = plan.events
        reach = plan.reach
        if rules.dryRun:
            result.dryRun = True
            # Blobs stay for everything the stored index lists.
            reach = reachableFrom(entries, referencesOf)
        else:
            if plan.changes():
                _writeAtomically(indexPath, work.serialize(), commit)
            result.tags = list(plan.dropped)
            result.manifests = sorted(plan.dead)
        if not leftAlone(repoDir, reach, result, log):
            _sweepBlobs(repoDir, reach.blobs, cutoff, result)
        _sweepTemporary(repoDir, cutoff, result)
    return result


def _sweepBlobs(repoDir: str, keep: set, cutoff: float, result: CollectionResult) -> None:
    blobsDir = os.path.join(repoDir, "blobs")
    try:
        algorithms = [e for e in os.scandir(blobsDir) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    for algorithm in algorithms:
        try:
            files = list(os.scandir(algorithm.path))
        except OSError:
            continue
        for entry in files:
            if _isTemporary(entry.name):
                freed = _removeTemporary(entry.path, cutoff)
                if freed is not None:
                    result.temporary += 1
                continue
            digest = _validDigest(f"{algorithm.name}:{entry.name}")
            if digest is None or digest in keep:
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                continue
            freed = removeIfStale(entry.path, cutoff)
            if freed is not None:
                result.blobs.append(digest)
                result.bytes += freed


def _removeTemporary(path: str, cutoff: float) -> int | None:
    """
    Delete a temporary file older than C{cutoff}.  Its change time counts
    too: a hard link being made for a mount keeps the source's old mtime,
    but its ctime is new.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if max(st.st_mtime, st.st_ctime) >= cutoff:
        return None
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None
    return 0


def _sweepTemporary(repoDir: str, cutoff: float, result: CollectionResult) -> None:
    """
    Temporary files a crash left beside C{index.json} and C{oci-layout}.
    """
    try:
        entries = list(os.scandir(repoDir))
    except OSError:
        return
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and _isTemporary(entry.name):
            if _removeTemporary(entry.path, cutoff) is not None:
                result.temporary += 1


def cleanUploadsBlocking(repoDir: str, cutoff: float) -> int:
    """
    Remove upload session directories (and monolithic uploads' temporary
    directories) nothing touched since C{cutoff}.  Blocking.

    @return: how many were removed.
    """
    uploads = os.path.join(repoDir, ".uploads")
    try:
        sessions = [e for e in os.scandir(uploads) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for session in sessions:
        times = [
            _mtime(path)
            for path in (
                session.path,
                os.path.join(session.path, "data"),
                os.path.join(session.path, "meta.json"),
            )
        ]
        times = [t for t in times if t is not None]
        if not times or max(times) >= cutoff:
            continue
        shutil.rmtree(session.path, ignore_errors=True)
        removed += 1
    return removed


def describeEvents(name: str, result: CollectionResult, rules: RepositoryRules) -> list:
    """
    One log event per tag or manifest a sweep removed, or would have in a
    dry run.

    @return: C{(format, fields)} pairs, for L{Logger.info} or
        C{format.format(**fields)}.
    """
    source = "retention" if rules.retention else "GC"
    if result.dryRun:
        source += " (dry run)"
    verb = "would remove" if result.dryRun else "removed"
    policy = "" if rules.policyIndex is None else f"policy {rules.policyIndex}: "
    events = []
    for kind, reference, why in result.events:
        fields = dict(source=source, verb=verb, repo=name, policy=policy, why=why)
        if kind == "tag":
            events.append(("{source}: {verb} tag {repo}:{tag} ({policy}{why})",
                           dict(fields, tag=reference)))
        else:
            events.append(("{source}: {verb} manifest {repo}@{digest} ({policy}{why})",
                           dict(fields, digest=reference)))
    return events


def logEvents(name: str, result: CollectionResult, rules: RepositoryRules, log=_log) -> None:
    """
    Log L{describeEvents} (on the reactor thread, after the sweep).
    """
    for format, fields in describeEvents(name, result, rules):
        log.info(format, **fields)


class GarbageCollector:
    """
    Collects the repositories of a L{zotwist.storage.local.LocalStore}, one
    at a time, each in the store's disk pool.

    @param delay: C{gcDelay}, in seconds.
    @param clock: returns the current time as C{time.time} does.
    @param retention: C{storage.retention} (a
        L{zotwist.config.RetentionConfig}), or L{None}: applied to each
        repository under the same lock as the collection.
    """

    def __init__(self, store, runner, delay: float, clock=time.time, retention=None):
        self.store = store
        self.runner = runner
        self.delay = delay
        self.clock = clock
        self.retention = retention
        #: Set to stop a round after the repository in progress.
        self.stopping = False
        #: Everything removed since this collector was made.
        self.removed = CollectionResult()
        #: Complete rounds of L{collectAll}.
        self.rounds = 0
        #: Called with each round's L{CollectionResult} (the metrics hook).
        self.onRound = None

    async def rulesFor(self, name: str, now: float) -> RepositoryRules:
        """
        L{sweepRules} of one repository (a journal of push and pull times
        is read in the disk pool, the first time only).
        """
        return await sweepRules(self.store, self.retention, name, now, self.delay)

    async def collectRepository(self, name: str) -> CollectionResult:
        repoDir = os.path.join(self.store.root, *name.split("/"))
        now = self.clock()
        rules = await self.rulesFor(name, now)
        result = await self.runner.run(
            collectRepositoryBlocking, repoDir, now - self.delay, self.store._commit,
            rules=rules,
        )
        logEvents(name, result, rules)
        return result

    async def collectAll(self) -> CollectionResult:
        """
        One collection of every repository (L{collectRound}).
        """
        return await collectRound(self, CollectionResult(), time.monotonic(), _log)

    def logRemoved(self, name: str, result: CollectionResult) -> None:
        """
        The summary of one repository's sweep that removed something.
        """
        _log.info(
            "GC: {repo}: removed {manifests} manifests, {blobs} blobs "
            "({bytes} bytes), {uploads} stale uploads",
            repo=name, manifests=len(result.manifests), blobs=len(result.blobs),
            bytes=result.bytes, uploads=result.uploads,
        )


_DAY = 86400.0


def parseTimeWindow(window: str) -> tuple[int, int]:
    """
    C{"HH:MM-HH:MM"} (as L{zotwist.config} normalises C{gcTimeWindow}) as
    C{(start, end)} minutes of the day.
    """
    start, end = window.split("-")
    (sh, sm), (eh, em) = (int(x) for x in start.split(":")), (int(x) for x in end.split(":"))
    return sh * 60 + sm, eh * 60 + em


def inTimeWindow(window: tuple[int, int], when: float) -> bool:
    """
    Whether C{when} (seconds since the epoch) falls in C{window} in UTC:
    start included, end excluded, to the minute (zot's rule); a window whose
    end is before its start wraps past midnight.
    """
    start, end = window
    minute = int((when % _DAY) // 60)
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def secondsUntilWindow(window: tuple[int, int], when: float) -> float:
    """
    Seconds from C{when} until C{window} next opens (0 when it is open).
    """
    if inTimeWindow(window, when):
        return 0.0
    opens = window[0] * 60.0
    wait = (opens - when % _DAY) % _DAY
    return wait or _DAY


class GarbageCollectionService(Service):
    """
    Runs L{GarbageCollector.collectAll} every C{interval} seconds (the first
    one an interval after start); a round still running when the next is
    due is not doubled.

    With a C{gcTimeWindow}, a round only starts inside the window: one due
    outside it waits for the window to open, and the next is due an
    interval after that (a round started inside runs to its end).

    @param window: C{gcTimeWindow} (C{"HH:MM-HH:MM"}, UTC), or L{None}.
    @param clock: the wall clock the window is read on (C{time.time}).
    """

    name = "gc"

    def __init__(self, collector: GarbageCollector, interval: float, reactor=None,
                 window: str | None = None, clock=time.time):
        self.collector = collector
        self.interval = interval
        self._reactor = reactor
        self._running = None
        self._loop = None
        self.window = parseTimeWindow(window) if window else None
        self._windowText = window
        self._clock = clock
        self._waiting = None

    def _callLater(self, seconds: float, f):
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        return reactor.callLater(seconds, f)

    def startService(self) -> None:
        super().startService()
        self.collector.stopping = False
        self._startLoop()

    def _tick(self) -> None:
        if self._running is not None or self._waiting is not None:
            return
        if self.window is not None:
            wait = secondsUntilWindow(self.window, self._clock())
            if wait > 0:
                _log.info("GC: a sweep is due; waiting {seconds:.0f} s for gcTimeWindow"
                          " {window} (UTC)", seconds=wait, window=self._windowText)
                self._waiting = self._callLater(wait, self._windowOpened)
                # The schedule restarts from the round the window lets
                # start, so the ticks that fall due meanwhile do not double it.
                if self._loop is not None and self._loop.running:
                    self._loop.stop()
                return
        self._running = ensureDeferred(self.collector.collectAll())

        def done(result):
            self._running = None
            return None

        self._running.addErrback(lambda f: _log.failure("GC round failed", f))
        self._running.addBoth(done)

    def setWindow(self, window: str | None) -> None:
        """
        Change C{gcTimeWindow} (a config reload): a sweep waiting for the
        old window is judged again against the new one.
        """
        self.window = parseTimeWindow(window) if window else None
        self._windowText = window
        if self._waiting is not None:
            if self._waiting.active():
                self._waiting.cancel()
            self._windowOpened()

    def _windowOpened(self) -> None:
        self._waiting = None
        if self.running:
            self._tick()
            if self._waiting is None:
                self._startLoop()

    def _startLoop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = LoopingCall(self._tick)
        if self._reactor is not None:
            self._loop.clock = self._reactor
        self._loop.start(self.interval, now=False)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._waiting is not None:
            if self._waiting.active():
                self._waiting.cancel()
            self._waiting = None
        if self._running is not None:
            # Let the repository in progress finish (it holds a lock and a
            # thread); the round stops there.
            self.collector.stopping = True
            return self._running
        return None
