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

L{IndexEntries} is mutable and used by one writer at a time (under the
index lock, in the disk pool); readers on the reactor thread get an
immutable L{RepositoryIndex} snapshot made from it.
"""

import json
from dataclasses import dataclass, field

from zotwist import oci

_HEAD = b'{"schemaVersion":2,"mediaType":"' + oci.OCI_INDEX.encode() + b'","manifests":['
_TAIL = b"]}"


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

    def __init__(self):
        self._entries: dict[tuple, dict] = {}
        self._encoded: dict[tuple, bytes] = {}
        self._keysByDigest: dict[str, set] = {}
        #: tag -> entry, and digest -> one entry naming it: kept up to date
        #: change by change, so a snapshot is two dict copies, not a scan.
        self._tags: dict[str, dict] = {}
        self._byDigest: dict[str, dict] = {}

    @classmethod
    def fromManifests(cls, manifests: list) -> "IndexEntries":
        entries = cls()
        for entry in manifests:
            if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
                continue
            tag = _tagOf(entry)
            if tag is not None:
                entries._put(("t", tag), entry)
            elif not entries._keysByDigest.get(entry["digest"]):
                entries._put(("d", entry["digest"]), entry)
        return entries


    # -- primitive changes ----------------------------------------------------

    def _put(self, key: tuple, entry: dict) -> None:
        self._remove(key)
        digest = entry["digest"]
        self._entries[key] = entry
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

    def tag(self, tag: str, descriptor: dict) -> None:
        """
        Point C{tag} at the manifest C{descriptor} describes.
        """
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
        for key in list(keys):
            self._remove(key)
        return True

    # -- reading --------------------------------------------------------------------

    def manifests(self) -> list:
        return list(self._entries.values())

    def serialize(self) -> bytes:
        """
        The whole C{index.json}, from the cached encodings.
        """
        return _HEAD + b",".join(self._encoded.values()) + _TAIL

    def snapshot(self, signature: tuple) -> "RepositoryIndex":
        """
        An immutable view for readers; later changes to these entries do not
        show through it.
        """
        return RepositoryIndex(
            signature, list(self._entries.values()), dict(self._tags), dict(self._byDigest)
        )


@dataclass
class RepositoryIndex:
    """
    An immutable view of a parsed C{index.json}, for readers.

    @ivar signature: C{(inode, mtime_ns, size)} of the file it describes.
    @ivar manifests: the entries, in file order.
    """

    signature: tuple
    manifests: list
    tags: dict = field(default_factory=dict)
    byDigest: dict = field(default_factory=dict)
    referrersByDigest: dict | None = None

    @classmethod
    def fromManifests(cls, signature: tuple, manifests: list) -> "RepositoryIndex":
        return IndexEntries.fromManifests(manifests).snapshot(signature)
