# -*- test-case-name: tests.test_index -*-
"""
A repository's C{index.json}: its entries, kept for cheap changes.

An OCI layout lists its manifests in C{index.json}; a tag is an entry whose
C{org.opencontainers.image.ref.name} annotation names it, an untagged
manifest an entry without one.  Pushing a tag into a repository with
thousands of them must not cost a scan and a full re-serialisation of the
list, so L{IndexEntries} keys the entries by tag (or, untagged, by digest),
remembers which keys name each digest, and keeps every entry's JSON encoding
so that writing the file is one C{join}.

A process keeps two L{IndexEntries} per repository: the writer's (changed
under the index lock, in the disk pool, with encodings) and the readers'
(L{RepositoryIndex}, on the reactor thread, without).  Every change is
also recorded as a small operation (L{IndexEntries.recording}), so that
the readers' copy, and the copies of other processes sharing the root (see
L{zotwist.storage.journal}), are brought up to date by replaying the
operations instead of parsing the whole file again.
"""

import json

from zotwist import oci

_HEAD = b'{"schemaVersion":2,"mediaType":"' + oci.OCI_INDEX.encode() + b'","manifests":['
_TAIL = b"]}"


#: How many entries one write of C{index.json} joins at once: chunks of some
#: tens of KiB, so no thread holds the GIL for a join of the whole file.
_CHUNK_ENTRIES = 256


def _encode(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode("utf-8")


def _tagOf(entry: dict):
    annotations = entry.get("annotations")
    if isinstance(annotations, dict):
        tag = annotations.get(oci.REF_NAME)
        if isinstance(tag, str):
            return tag
    return None


class IndexEntries:
    """
    The manifest entries of one C{index.json}, in file order.

    Keys are C{("t", tag)} for tagged entries and C{("d", digest)} for
    untagged ones; a manifest is listed either under each of its tags or,
    when it has none, once untagged.
    """

    def __init__(self, encode: bool = True):
        self._entries: dict[tuple, dict] = {}
        #: key -> JSON encoding of the entry; L{None} for a readers' copy,
        #: which never writes the file.
        self._encoded: dict[tuple, bytes] | None = {} if encode else None
        #: The operations applied since L{recording} started, or L{None}.
        self._log: list | None = None
        self._keysByDigest: dict[str, set] = {}
        #: tag -> entry, and digest -> one entry naming it: kept up to date
        #: change by change.
        self._tags: dict[str, dict] = {}
        self._byDigest: dict[str, dict] = {}

    @classmethod
    def fromManifests(cls, manifests: list, encode: bool = True) -> "IndexEntries":
        entries = cls(encode)
        entries._load(manifests)
        return entries

    def _load(self, manifests: list) -> None:
        for entry in manifests:
            if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
                continue
            tag = _tagOf(entry)
            if tag is not None:
                self._put(("t", tag), entry)
            elif not self._keysByDigest.get(entry["digest"]):
                self._put(("d", entry["digest"]), entry)

    # -- primitive changes ----------------------------------------------------

    def _put(self, key: tuple, entry: dict) -> None:
        self._remove(key)
        digest = entry["digest"]
        self._entries[key] = entry
        if self._encoded is not None:
            self._encoded[key] = _encode(entry)
        self._keysByDigest.setdefault(digest, set()).add(key)
        self._byDigest.setdefault(digest, entry)
        if key[0] == "t":
            self._tags[key[1]] = entry

    def _remove(self, key: tuple) -> dict | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        digest = entry["digest"]
        if self._encoded is not None:
            self._encoded.pop(key, None)
        if key[0] == "t":
            self._tags.pop(key[1], None)
        keys = self._keysByDigest.get(digest)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keysByDigest[digest]
        if self._byDigest.get(digest) is entry:
            del self._byDigest[digest]
            if keys:
                self._byDigest[digest] = self._entries[next(iter(keys))]
        return entry

    def _keepUntagged(self, entry: dict) -> None:
        """
        After C{entry} lost its tag: list its manifest untagged if nothing
        else lists it, so it stays reachable by digest (until GC).
        """
        digest = entry["digest"]
        if self._keysByDigest.get(digest):
            return
        untagged = {k: v for k, v in entry.items() if k != "annotations"}
        annotations = {
            k: v for k, v in (entry.get("annotations") or {}).items() if k != oci.REF_NAME
        }
        if annotations:
            untagged["annotations"] = annotations
        self._put(("d", digest), untagged)

    # -- what the store does ------------------------------------------------------

    def recording(self) -> list:
        """
        Start recording the operations applied from now on.

        @return: the list they are appended to, as JSON-ready lists
            (L{apply} replays them).
        """
        self._log = []
        return self._log

    def stopRecording(self) -> None:
        self._log = None

    def apply(self, operations) -> None:
        """
        Replay operations recorded by L{recording} (here or in another
        process).

        @raise ValueError: for an operation this version does not know.
        """
        for operation in operations:
            kind = operation[0]
            if kind == "t":
                self.tag(operation[1], operation[2])
            elif kind == "a":
                self.add(operation[1])
            elif kind == "u":
                self.untag(operation[1])
            elif kind == "r":
                self.removeDigest(operation[1])
            else:
                raise ValueError(f"unknown index operation {kind!r}")

    def tag(self, tag: str, descriptor: dict) -> None:
        """
        Point C{tag} at the manifest C{descriptor} describes.
        """
        if self._log is not None:
            self._log.append(["t", tag, descriptor])
        previous = self._remove(("t", tag))
        entry = dict(descriptor)
        entry["annotations"] = {oci.REF_NAME: tag}
        self._remove(("d", descriptor["digest"]))
        self._put(("t", tag), entry)
        if previous is not None and previous["digest"] != descriptor["digest"]:
            self._keepUntagged(previous)

    def add(self, descriptor: dict) -> bool:
        """
        List a manifest untagged unless it is listed already.

        @return: whether anything changed.
        """
        if self._keysByDigest.get(descriptor["digest"]):
            return False
        if self._log is not None:
            self._log.append(["a", descriptor])
        self._put(("d", descriptor["digest"]), dict(descriptor))
        return True

    def untag(self, tag: str) -> bool:
        """
        Remove C{tag}; its manifest stays, untagged if nothing else names it.

        @return: whether the tag existed.
        """
        previous = self._remove(("t", tag))
        if previous is None:
            return False
        if self._log is not None:
            self._log.append(["u", tag])
        self._keepUntagged(previous)
        return True

    def removeDigest(self, digest: str) -> bool:
        """
        Remove a manifest and every tag naming it.

        @return: whether it was listed.
        """
        keys = self._keysByDigest.get(digest)
        if not keys:
            return False
        if self._log is not None:
            self._log.append(["r", digest])
        for key in list(keys):
            self._remove(key)
        return True

    # -- reading --------------------------------------------------------------------

    @property
    def tags(self) -> dict:
        """
        C{{tag: entry}}: the live mapping; do not change it.
        """
        return self._tags

    @property
    def byDigest(self) -> dict:
        """
        C{{digest: an entry naming it}}: the live mapping; do not change it.
        """
        return self._byDigest

    def manifests(self) -> list:
        return list(self._entries.values())

    def serialize(self) -> bytes:
        """
        The whole C{index.json}, from the cached encodings.
        """
        return b"".join(self.chunks())

    def chunks(self):
        """
        The whole C{index.json} in pieces of a few hundred entries, to be
        written one after the other (each join holds the GIL only briefly,
        and no buffer of the whole file's size is built).
        """
        encoded = list(self._encoded.values())
        if len(encoded) <= _CHUNK_ENTRIES:
            yield _HEAD + b",".join(encoded) + _TAIL
            return
        yield _HEAD
        last = len(encoded)
        for start in range(0, last, _CHUNK_ENTRIES):
            piece = encoded[start:start + _CHUNK_ENTRIES]
            if start + _CHUNK_ENTRIES < last:
                piece.append(b"")  # the comma before the next chunk, in one join
            yield b",".join(piece)
        yield _TAIL

    def snapshot(self, signature: tuple) -> "RepositoryIndex":
        """
        An independent readers' copy: later changes to these entries do not
        show through it.  For stores whose writer keeps its own entries and
        hands readers copies (the S3 store); the local store changes its
        readers' copy in place instead.
        """
        index = RepositoryIndex(signature)
        index._entries = dict(self._entries)
        index._keysByDigest = {d: set(keys) for d, keys in self._keysByDigest.items()}
        index._tags = dict(self._tags)
        index._byDigest = dict(self._byDigest)
        return index


class RepositoryIndex(IndexEntries):
    """
    The readers' copy of a repository's C{index.json}, on the reactor
    thread: changed in place by replayed operations, never encoded.

    @ivar signature: C{(inode, mtime_ns, size)} of the file it describes.
    @ivar version: bumped by every change, so that something computed from
        it across an C{await} can tell whether it still holds.
    @ivar referrersByDigest: C{{subject digest: [ManifestInfo]}} computed
        from this index, or L{None} until needed (reset by every change).
    """

    def __init__(self, signature: tuple | None = None):
        super().__init__(encode=False)
        self.signature = signature
        self.version = 0
        self.referrersByDigest: dict | None = None
        #: A sorted list of the tags, kept until the next change.
        self._sortedTags: list | None = None
        #: Where this copy stands in the repository's journal (a
        #: L{zotwist.storage.journal.Position}), or L{None}.
        self.position = None

    @classmethod
    def fromManifests(cls, signature: tuple, manifests: list) -> "RepositoryIndex":
        index = cls(signature)
        index._load(manifests)
        return index

    def apply(self, operations, signature: tuple | None = None) -> None:
        """
        Replay operations; the index then describes the file of
        C{signature}.
        """
        super().apply(operations)
        self.changed()
        if signature is not None:
            self.signature = signature

    def changed(self) -> None:
        self.version += 1
        self.referrersByDigest = None
        self._sortedTags = None

    def sortedTags(self) -> list:
        """
        The tags, sorted (kept until the next change: tag lists of a quiet
        repository cost no sort per request).
        """
        if self._sortedTags is None:
            self._sortedTags = sorted(self._tags)
        return self._sortedTags
