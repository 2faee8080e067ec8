"""
A real OpenLDAP C{slapd}, started by a test on 127.0.0.1 with its own
config and database in the test's temporary directory, never the system's.

L{Slapd} writes a C{slapd.conf} (mdb backend, the C{memberof} overlay so
that users carry C{memberOf}, TLS with the test PKI's server certificate),
starts C{slapd} in the foreground on a free port for C{ldap://} (StartTLS
too) and another for C{ldaps://}, waits until it accepts connections, loads
the directory with C{ldapadd}, and stops it when the test ends.  Starting
takes well under a second.

The directory, under C{dc=example,dc=org}:

  - C{cn=reader,ou=services}: the service account (password C{reader-pw}),
    the only one allowed to read user entries;
  - C{ou=people}: C{alice} (groups C{devs} and C{ops}), C{bob} (no group),
    C{carol} in the sub-unit C{ou=contractors} (group C{devs}, found only by
    a subtree search), C{dave} (a C{person}, not an C{inetOrgPerson}), and
    C{eve} and C{Eve2} who share the C{cn} C{twin};
  - C{ou=groups}: C{devs} and C{ops} (C{groupOfNames}).

Passwords are C{<name>-pw}, stored as C{{SSHA}} hashes.
"""

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import time

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import FailTest

from tests.procsupport import freePort, waitUntil

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"
READER_DN = f"cn=reader,ou=services,{SUFFIX}"
READER_PASSWORD = "reader-pw"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"

_SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def ssha(password: str) -> str:
    """
    An C{{SSHA}} userPassword value, as C{slappasswd} makes them.
    """
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _tool(name: str) -> str:
    """
    The path of an OpenLDAP program; a missing one fails the test (the
    Debian packages slapd and ldap-utils are in C{tests/run.sh}).
    """
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise FailTest(
            f"{name} is not installed: the LDAP tests need OpenLDAP; run `bash tests/run.sh`, "
            "which installs the Debian packages slapd and ldap-utils"
        )
    return found


def _entries() -> str:
    """
    The directory as LDIF.
    """

    def person(uid, parent=PEOPLE, objectClass="inetOrgPerson", cn=None):
        lines = [
            f"dn: uid={uid},{parent}",
            "objectClass: top",
            "objectClass: person",
            "objectClass: organizationalPerson",
        ]
        if objectClass == "inetOrgPerson":
            lines.append("objectClass: inetOrgPerson")
            lines.append(f"uid: {uid}")
        else:
            lines.append("objectClass: uidObject")
            lines.append(f"uid: {uid}")
        lines += [f"cn: {cn or uid}", f"sn: {uid}", f"userPassword: {ssha(uid + '-pw')}"]
        return "\n".join(lines)

    def group(name, *members):
        return "\n".join(
            [f"dn: cn={name},{GROUPS}", "objectClass: groupOfNames", f"cn: {name}"]
            + [f"member: {m}" for m in members]
        )

    blocks = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=contractors,{PEOPLE}\nobjectClass: organizationalUnit\nou: contractors",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services",
        "\n".join(
            [
                f"dn: {READER_DN}",
                "objectClass: person",
                "cn: reader",
                "sn: reader",
                f"userPassword: {ssha(READER_PASSWORD)}",
            ]
        ),
        person("alice"),
        person("bob"),
        person("carol", parent=f"ou=contractors,{PEOPLE}"),
        person("dave", objectClass="person"),
        person("eve", cn="twin"),
        person("Eve2", cn="twin"),
        group("devs", f"uid=alice,{PEOPLE}", f"uid=carol,ou=contractors,{PEOPLE}"),
        group("ops", f"uid=alice,{PEOPLE}"),
    ]
    return "\n\n".join(blocks) + "\n"


class Slapd:
    """
    One C{slapd} for one test.

    @ivar port: the C{ldap://} port (plain and StartTLS).
    @ivar tlsPort: the C{ldaps://} port.
    """

    def __init__(self, testCase, pki):
        """
        Prepare the files; L{start} runs the server.

        @param pki: a L{tests.tlssupport.PKI}; its server certificate (for
            C{localhost} and C{127.0.0.1}) is the directory's.
        """
        self._testCase = testCase
        self.base = os.path.abspath(testCase.mktemp())
        os.makedirs(os.path.join(self.base, "db"))
        self.pki = pki
        self.port = freePort()
        self.tlsPort = freePort()
        self.process: subprocess.Popen | None = None
        self.logPath = os.path.join(self.base, "slapd.log")
        self.configPath = os.path.join(self.base, "slapd.conf")
        schemas = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in _SCHEMAS)
        with open(self.configPath, "w") as f:
            f.write(
                f"""{schemas}
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {self.base}/slapd.pid
argsfile {self.base}/slapd.args
TLSCACertificateFile {pki.ca.certPath}
TLSCertificateFile {pki.server.certPath}
TLSCertificateKeyFile {pki.server.keyPath}

database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ssha(ADMIN_PASSWORD)}
directory {self.base}/db
overlay memberof

access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{READER_DN}" read
    by self read
    by * none
"""
            )

    async def start(self) -> "Slapd":
        """
        Start slapd, wait for its ports, load the directory.
        """
        slapd = _tool("slapd")
        ldapadd = _tool("ldapadd")
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tlsPort}/"
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [slapd, "-f", self.configPath, "-h", urls, "-d", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._testCase.addCleanup(self.stop)
        await waitUntil(
            lambda: self._accepting(self.port) and self._accepting(self.tlsPort),
            10,
            lambda: f"slapd did not listen: {self._log()}",
        )
        ldifPath = os.path.join(self.base, "directory.ldif")
        with open(ldifPath, "w") as f:
            f.write(_entries())
        out, err, code = await getProcessOutputAndValue(
            ldapadd,
            ["-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-f", ldifPath],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LDAPTLS_REQCERT": "never"},
        )
        if code != 0:
            raise FailTest(f"ldapadd failed ({code}): {err.decode()} {out.decode()}")
        return self

    def _accepting(self, port: int) -> bool:
        """
        Whether C{port} accepts a TCP connection; fails if slapd exited.
        """
        import socket

        if self.process.poll() is not None:
            raise FailTest(f"slapd exited with {self.process.returncode}: {self._log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _log(self) -> str:
        """
        What slapd printed.
        """
        with open(self.logPath, errors="replace") as f:
            return f.read()[-3000:]

    @property
    def url(self) -> str:
        """
        The C{ldap://} URL.
        """
        return f"ldap://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """
        Stop slapd (SIGTERM, then SIGKILL) and reap it.
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def config(self, **overrides) -> dict:
        """
        An C{http.auth.ldap} section for this server: plain LDAP (zot's
        C{insecure}), the reader as service account, C{uid} under
        C{ou=people}, groups from C{memberOf}.
        """
        section = {
            "address": "127.0.0.1",
            "port": self.port,
            "insecure": True,
            "baseDN": PEOPLE,
            "userAttribute": "uid",
            "userGroupAttribute": "memberOf",
            "bindDN": READER_DN,
            "bindPassword": READER_PASSWORD,
        }
        section.update(overrides)
        return {key: value for key, value in section.items() if value is not None}
