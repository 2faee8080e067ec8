"""
Tests for L{zotwist.storage.journal} and the operations L{IndexEntries}
records for it (L{zotwist.storage.index}).
"""

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from zotwist import oci
from zotwist.storage import journal
from zotwist.storage.index import IndexEntries, RepositoryIndex


def descriptor(n: int) -> dict:
    return {"mediaType": oci.OCI_MANIFEST, "digest": oci.digestOf(b"m%d" % n), "size": n}


class RecordingTests(SynchronousTestCase):
    """
    L{IndexEntries.recording} and L{IndexEntries.apply}: replaying what was
    recorded turns a copy of the old state into the new one.
    """

    def test_replayMatches(self):
        """
        Tags, retags, untagged adds, untags and removals, recorded on one
        copy and replayed on another, leave both with the same entries and
        the same serialized file.
        """
        start = [
            {**descriptor(1), "annotations": {oci.REF_NAME: "a"}},
            {**descriptor(2), "annotations": {oci.REF_NAME: "b"}},
            descriptor(3),
        ]
        writer = IndexEntries.fromManifests(start)
        reader = RepositoryIndex.fromManifests((1, 2, 3), start)
        operations = writer.recording()
        writer.tag("c", descriptor(4))
        writer.tag("a", descriptor(2))  # retag: digest 1 stays, untagged
        self.assertTrue(writer.add(descriptor(5)))
        self.assertFalse(writer.add(descriptor(4)))  # listed already: no record
        self.assertTrue(writer.untag("b"))
        self.assertFalse(writer.untag("nope"))
        self.assertTrue(writer.removeDigest(descriptor(3)["digest"]))
        writer.stopRecording()
        self.assertEqual([op[0] for op in operations], ["t", "t", "a", "u", "r"])
        # Through JSON, as the journal carries them.
        reader.apply(json.loads(json.dumps(operations)), (4, 5, 6))
        self.assertEqual(reader.manifests(), writer.manifests())
        self.assertEqual(reader.tags, writer.tags)
        self.assertEqual(reader.byDigest, writer.byDigest)
        self.assertEqual(reader.signature, (4, 5, 6))
        self.assertEqual(reader.sortedTags(), ["a", "c"])

    def test_stopRecording(self):
        """
        Changes after L{IndexEntries.stopRecording} are not recorded.
        """
        entries = IndexEntries()
        operations = entries.recording()
        entries.tag("a", descriptor(1))
        entries.stopRecording()
        entries.tag("b", descriptor(2))
        self.assertEqual(operations, [["t", "a", descriptor(1)]])

    def test_unknownOperation(self):
        """
        An operation this version does not know is refused.
        """
        self.assertRaises(ValueError, IndexEntries().apply, [["z", "x"]])

    def test_changedResetsDerived(self):
        """
        A replayed change bumps the version and forgets the sorted tags and
        the referrers computed from the old state.
        """
        index = RepositoryIndex.fromManifests((1, 1, 1), [])
        index.referrersByDigest = {}
        self.assertEqual(index.sortedTags(), [])
        version = index.version
        index.apply([["t", "x", descriptor(1)]])
        self.assertGreater(index.version, version)
        self.assertIsNone(index.referrersByDigest)
        self.assertEqual(index.sortedTags(), ["x"])

    def test_chunksAreTheFile(self):
        """
        The chunks written one after the other are the whole file: valid
        JSON listing every entry in order, for small and large indexes.
        """
        for count in (0, 1, 255, 256, 257, 1000):
            entries = IndexEntries()
            for n in range(count):
                entries.tag(f"t{n}", descriptor(n))
            data = b"".join(entries.chunks())
            self.assertEqual(data, entries.serialize())
            document = json.loads(data)
            self.assertEqual(document["mediaType"], oci.OCI_INDEX)
            self.assertEqual(document["manifests"], entries.manifests())


class JournalTests(SynchronousTestCase):
    """
    Appending, reading and replaying the journal.
    """

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = journal.journalPath(self.directory)

    def test_noJournal(self):
        """
        Before any record there is no file: a copy is at L{journal.START}
        and current.
        """
        self.assertEqual(journal.positionNow(self.path), journal.START)
        self.assertTrue(journal.isCurrent(journal.START, journal.stamp(self.path)))
        self.assertEqual(journal.read(self.path, journal.START), ([], journal.START))

    def test_appendReadReplay(self):
        """
        Records appended after a copy's position are read and replayed in
        order; the copy ends at the last record's signature, current.
        """
        copy = IndexEntries()
        position = journal.positionNow(self.path)
        end = journal.append(self.path, None, (1, 1, 1), [["t", "a", descriptor(1)]])
        self.assertFalse(journal.isCurrent(position, journal.stamp(self.path)))
        self.assertTrue(journal.isCurrent(end, journal.stamp(self.path)))
        journal.append(self.path, (1, 1, 1), (2, 2, 2), [["t", "b", descriptor(2)]])
        records, after = journal.read(self.path, position)
        self.assertEqual(len(records), 2)
        signature, replayed = journal.replay(copy, None, after, records)
        self.assertEqual(signature, (2, 2, 2))
        self.assertTrue(replayed.synced)
        self.assertEqual(sorted(copy.tags), ["a", "b"])
        self.assertTrue(journal.isCurrent(replayed, journal.stamp(self.path)))

    def test_partialLineWaits(self):
        """
        A line still being written (no newline yet) is not read; it is, once
        complete.
        """
        journal.append(self.path, None, (1, 1, 1), [])
        line = journal.encode((1, 1, 1), (2, 2, 2), [["u", "a"]])
        with open(self.path, "ab") as f:
            f.write(line[:10])
        records, position = journal.read(self.path, journal.START)
        self.assertEqual(len(records), 1)
        with open(self.path, "ab") as f:
            f.write(line[10:])
        records, _ = journal.read(self.path, position)
        self.assertEqual(records, [((1, 1, 1), (2, 2, 2), [["u", "a"]])])

    def test_brokenChain(self):
        """
        A record that does not start from the copy's state (the file was
        written by something that did not journal) breaks the chain.
        """
        journal.append(self.path, (9, 9, 9), (2, 2, 2), [["t", "a", descriptor(1)]])
        synced = journal.Position(None, 0, True)
        records, end = journal.read(self.path, synced)
        self.assertIsNone(journal.replay(IndexEntries(), (1, 1, 1), end, records))

    def test_unreadableRecordBreaksTheChain(self):
        """
        A complete line that is not a record breaks the chain too.
        """
        with open(self.path, "wb") as f:
            f.write(b"garbage\n")
        records, end = journal.read(self.path, journal.Position(None, 0, True))
        self.assertIsNone(journal.replay(IndexEntries(), (1, 1, 1), end, records))

    def test_unsyncedSkipsOlderRecords(self):
        """
        A copy parsed from the file (unsynced) skips records older than its
        state, syncs on the record that produced it, and applies the rest.
        """
        journal.append(self.path, (0, 0, 0), (1, 1, 1), [["t", "old", descriptor(1)]])
        journal.append(self.path, (1, 1, 1), (2, 2, 2), [["t", "mine", descriptor(2)]])
        journal.append(self.path, (2, 2, 2), (3, 3, 3), [["t", "new", descriptor(3)]])
        copy = IndexEntries.fromManifests(
            [{**descriptor(2), "annotations": {oci.REF_NAME: "mine"}}]
        )
        records, end = journal.read(self.path, journal.START)
        signature, position = journal.replay(copy, (2, 2, 2), end, records)
        self.assertEqual(signature, (3, 3, 3))
        self.assertTrue(position.synced)
        self.assertEqual(sorted(copy.tags), ["mine", "new"])

    def test_rotation(self):
        """
        Past L{journal.ROTATE_SIZE} the journal starts over with a checkpoint
        and the new record: a copy that follows along never loses its
        chain, and a copy left behind in the old journal does.
        """
        self.patch(journal, "ROTATE_SIZE", 300)
        follower, followerSignature = IndexEntries(), None
        position = journal.positionNow(self.path)
        behind = None
        signature = None
        inodes = set()
        for n in range(12):
            new = (n + 1, n + 1, n + 1)
            end = journal.append(self.path, signature, new, [["t", f"t{n}", descriptor(n)]])
            inodes.add(end.inode)
            signature = new
            if n == 1:
                # A copy that reads the first two records, then no more.
                entries = IndexEntries()
                records, after = journal.read(self.path, journal.START)
                behind = (entries, *journal.replay(entries, None, after, records))
            records, after = journal.read(self.path, position)
            followerSignature, position = journal.replay(
                follower, followerSignature, after, records
            )
        self.assertGreater(len(inodes), 1)  # it rotated
        self.assertEqual(followerSignature, signature)
        self.assertEqual(sorted(follower.tags), sorted(f"t{n}" for n in range(12)))
        self.assertTrue(journal.isCurrent(position, journal.stamp(self.path)))
        entries, behindSignature, behindPosition = behind
        self.assertEqual(behindSignature, (2, 2, 2))
        records, after = journal.read(self.path, behindPosition)
        self.assertIsNone(journal.replay(entries, behindSignature, after, records))
