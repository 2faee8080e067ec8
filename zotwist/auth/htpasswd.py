# -*- test-case-name: tests.test_htpasswd -*-
"""
C{http.auth.htpasswd}: user names and bcrypt hashes in an Apache htpasswd
file, as C{htpasswd -B} writes them (C{$2y$}; C{$2a$} and C{$2b$} work too).

zot accepts bcrypt only for this file, and so does zotwist: a line with
another kind of hash (MD5 C{$apr1$}, SHA1 C{{SHA}}, crypt) is skipped with a
warning naming the user and line, never the hash.

The file is read again when it changes (its inode, size or modification
time), at the next login, without a restart.  An unreadable or missing file
refuses every login until it is back: an operator who removes the file to
lock everyone out gets exactly that.

Every check runs in a thread pool: bcrypt costs a few hundred milliseconds
at the usual work factors, which the reactor must not spend.  bcrypt
compares in constant time; an unknown user is checked against a dummy hash
of the same cost, so that the answer takes as long as for a wrong password
and does not tell which user names exist.
"""

import os
import threading

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from zope.interface import implementer

from zotwist.auth.realm import AvatarId

#: The prefixes of the bcrypt variants htpasswd and other tools write.
BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")

#: htpasswd -B's default work factor.
DEFAULT_COST = 10


def _cost(hashed: bytes) -> int:
    """
    The work factor of a bcrypt hash (C{$2y$10$...} is 10).
    """
    try:
        return min(max(int(hashed[4:6]), 4), 31)
    except ValueError:
        return DEFAULT_COST


def _fingerprint(stat: os.stat_result) -> tuple:
    """
    What identifies one version of the file: replaced (inode), rewritten
    (size) or touched (modification time).
    """
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def parseHTPasswd(data: bytes, path: str, log=None) -> "dict[bytes, bytes]":
    """
    Parse an htpasswd file into user name -> bcrypt hash.

    Blank lines and C{#} comments are skipped; so, with a warning, are
    lines without a colon and lines whose hash is not bcrypt.  A user listed
    twice keeps the last entry, as zot does.
    """
    users: dict[bytes, bytes] = {}
    for number, line in enumerate(data.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        user, colon, hashed = line.partition(b":")
        if not colon or not user:
            if log is not None:
                log.warn("{path}: line {line} is not user:hash; skipped", path=path, line=number)
            continue
        if not hashed.startswith(BCRYPT_PREFIXES) or len(hashed) != 60:
            if log is not None:
                log.warn(
                    "{path}: line {line} (user {user}) has no bcrypt hash; skipped "
                    "(use htpasswd -B)",
                    path=path,
                    line=number,
                    user=user.decode("utf-8", "replace"),
                )
            continue
        users[user] = hashed
    return users


@implementer(ICredentialsChecker)
class HTPasswdChecker:
    """
    Checks user names and passwords against an htpasswd file of bcrypt
    hashes.

    @param path: the file.
    @param runner: an L{zotwist.threads.IBlockingRunner} the file reads and
        bcrypt checks run in.
    """

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(self, path: str, runner):
        self.path = path
        self._runner = runner
        self._lock = threading.Lock()
        self._fingerprint = None
        self._users: dict[bytes, bytes] = {}
        self._dummies: dict[int, bytes] = {}
        self.reloads = 0

    def load(self) -> None:
        """
        Read the file now; raises C{OSError} if it cannot be read (used at
        start-up, so that a wrong path stops the registry).
        """
        with self._lock:
            stat = os.stat(self.path)
            self._read(stat)

    def _read(self, stat) -> None:
        """
        Read and parse the file (caller holds the lock).
        """
        with open(self.path, "rb") as f:
            data = f.read()
        self._users = parseHTPasswd(data, self.path, self._log)
        self._fingerprint = _fingerprint(stat)
        self.reloads += 1
        self._log.info(
            "Loaded {count} users from {path}", count=len(self._users), path=self.path
        )

    def _current(self) -> "dict[bytes, bytes]":
        """
        The users of the file as it is now, re-reading it if it changed;
        empty (everyone refused) while it cannot be read.
        """
        with self._lock:
            try:
                stat = os.stat(self.path)
                if _fingerprint(stat) != self._fingerprint:
                    self._read(stat)
            except OSError as e:
                if self._fingerprint is not None:
                    self._log.error(
                        "Cannot read {path}: {error}; refusing htpasswd logins until it is back",
                        path=self.path,
                        error=e.strerror or str(e),
                    )
                self._fingerprint = None
                self._users = {}
            return self._users

    def _dummyHash(self, users: "dict[bytes, bytes]") -> bytes:
        """
        A hash of a random secret, at the work factor of the file's first
        entry, for unknown users to be checked against.
        """
        cost = _cost(next(iter(users.values()))) if users else DEFAULT_COST
        with self._lock:
            dummy = self._dummies.get(cost)
        if dummy is None:
            dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
            with self._lock:
                self._dummies[cost] = dummy
        return dummy

    def _check(self, username: bytes, password: bytes) -> bool:
        """
        The blocking part: reload if needed, then bcrypt.
        """
        users = self._current()
        hashed = users.get(username)
        if hashed is None:
            bcrypt.checkpw(password, self._dummyHash(users))
            return False
        try:
            return bcrypt.checkpw(password, hashed)
        except ValueError:
            self._log.warn(
                "{path}: the hash of user {user} is not valid bcrypt",
                path=self.path,
                user=username.decode("utf-8", "replace"),
            )
            return False

    def requestAvatarId(self, credentials):
        """
        @return: a L{Deferred} firing with an L{AvatarId} (method
            C{"htpasswd"}), or failing with L{UnauthorizedLogin}.
        """
        username = credentials.username
        password = credentials.password
        if isinstance(username, str):
            username = username.encode("utf-8")
        if isinstance(password, str):
            password = password.encode("utf-8")
        d = self._runner.run(self._check, username, password)

        def checked(ok):
            if not ok:
                raise UnauthorizedLogin("wrong user name or password")
            return AvatarId(username.decode("utf-8"), "htpasswd")

        return d.addCallback(checked)
