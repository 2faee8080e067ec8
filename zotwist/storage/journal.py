# -*- test-case-name: tests.test_journal -*-
"""
The change journal of a repository's C{index.json}.

Worker processes sharing a root each keep the parsed index of every
repository they serve.  When one of them changes C{index.json}, the others
must see the change at their next request, but parsing a file of thousands
of tags again (and encoding its entries for the next write) costs tens of
milliseconds: two workers taking turns at pushing tags would spend all
their time re-reading each other's files.

So every write of C{index.json} by this registry is followed, under the
same index lock, by one line appended to C{.index.journal} beside it:
C{[previous signature, new signature, operations]}, where a signature is
the file's C{(inode, mtime_ns, size)} (L{None} before there was a file)
and the operations are what L{zotwist.storage.index.IndexEntries.recording}
recorded.  A process whose
copy describes the previous signature replays the operations and has the
new file's content, without reading it.

Whatever breaks the chain (an C{index.json} written by something that does
not append here, such as the garbage collector or another tool; a crash
between the write and the append; a record this version cannot read) shows
as a record whose previous signature is not the copy's, or a file whose
signature no record reaches: the reader then parses the file as before.
The journal only ever saves work; the file stays the truth.

The journal is replaced by a fresh one when it grows past L{ROTATE_SIZE}:
a checkpoint record (C{[null, signature, null]}) naming the state the old
one ended in, then the new record; a copy that had followed the old one to its end carries on in
the new one.
"""

import json
import os
from dataclasses import dataclass

#: The journal's file name, beside C{index.json}.
JOURNAL = ".index.journal"
#: Past this size the journal is started over.
ROTATE_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Position:
    """
    Where a copy of the index stands in the journal.

    @ivar inode: the journal file's inode (a rotated journal is another
        file), or L{None} when there was no journal.
    @ivar offset: the byte after the last record the copy has seen.
    @ivar synced: whether the copy is known to be the state after that
        record (false after parsing the file, until a record confirms it).
    """

    inode: int | None
    offset: int
    synced: bool = True


#: The position of a copy made when the repository had no journal yet.
START = Position(None, 0, False)


def journalPath(repoDir: str) -> str:
    return os.path.join(repoDir, JOURNAL)


def stamp(path: str) -> tuple | None:
    """
    The journal's C{(inode, size)}, or L{None} when there is none.  A
    C{stat}: cheap enough for the reactor thread.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_ino, st.st_size


def isCurrent(position: Position, journalStamp: tuple | None) -> bool:
    """
    Whether nothing was appended since C{position}.
    """
    if journalStamp is None:
        return position.inode is None
    return (position.inode, position.offset) == journalStamp


def samePlace(a: Position, b: Position) -> bool:
    """
    Whether two positions are the same place in the same journal (whatever
    their C{synced}).
    """
    return a.inode == b.inode and a.offset == b.offset


def positionNow(path: str) -> Position:
    """
    The end of the journal as it is now, unsynced: taken before parsing
    C{index.json}, so that every record appended after it is read later.
    """
    current = stamp(path)
    if current is None:
        return START
    return Position(current[0], current[1], False)


def read(path: str, position: Position, limit: int | None = None):
    """
    The whole records appended since C{position}.  Blocking (a small read).

    @param limit: read nothing and return L{None} when more than this many
        bytes are waiting (the caller reads them elsewhere).
    @return: C{(records, position after them)}, or L{None} when over
        C{limit}.  A partly written last line is left for the next read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return [], START if position.inode is not None else position
    try:
        st = os.fstat(fd)
        if st.st_ino != position.inode:
            position = Position(st.st_ino, 0, position.synced)
        waiting = st.st_size - position.offset
        if waiting <= 0:
            return [], position
        if limit is not None and waiting > limit:
            return None
        data = os.pread(fd, waiting, position.offset)
    finally:
        os.close(fd)
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            previous, new, operations = json.loads(line)
            record = (
                tuple(previous) if previous is not None else None,
                tuple(new),
                operations,
            )
        except (ValueError, TypeError):
            record = None  # unreadable: breaks the chain
        records.append(record)
    return records, Position(position.inode, position.offset + end, position.synced)


def replay(entries, signature: tuple | None, position: Position, records):
    """
    Bring C{entries} (describing the file of C{signature}) forward by the
    records read after C{position}.

    @return: C{(signature, position)} after them, or L{None} when the chain
        breaks (the caller parses the file).
    """
    synced = position.synced
    for record in records:
        if record is None:
            return None
        previous, new, operations = record
        if operations is not None and previous == signature:
            try:
                entries.apply(operations)
            except (ValueError, TypeError, KeyError, IndexError):
                return None
            signature = new
            synced = True
        elif new == signature:
            synced = True  # a state this copy has already
        elif synced:
            return None
        # else: a record from before the state this copy was parsed from.
    return signature, Position(position.inode, position.offset, synced)


def encode(previous: tuple | None, new: tuple, operations: list | None) -> bytes:
    return json.dumps(
        [list(previous) if previous is not None else None, list(new), operations],
        separators=(",", ":"),
    ).encode("utf-8") + b"\n"


def append(path: str, previous: tuple | None, new: tuple, operations: list) -> Position:
    """
    Append a record.  Blocking; under the index lock only (so records land
    in the order of the writes, and this writer's is the last one).

    A journal past L{ROTATE_SIZE} is first started over (L{rotate}), with
    this record after the checkpoint: a process that had read the old
    journal to its end goes on in the new one.

    @return: the position after the record (synced).
    """
    line = encode(previous, new, operations)
    current = stamp(path)
    if current is not None and current[1] > ROTATE_SIZE:
        return rotate(path, previous, line)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return Position(st.st_ino, st.st_size, True)


def rotate(path: str, signature: tuple | None, then: bytes = b"") -> Position:
    """
    Start the journal over: a checkpoint of C{signature} (the state the
    old journal ended in), then the records C{then}.  Blocking; under the
    index lock only.
    """
    data = then
    if signature is not None:
        data = encode(None, signature, None) + then
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        st = os.fstat(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return Position(st.st_ino, st.st_size, True)
