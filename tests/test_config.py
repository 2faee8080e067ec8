"""
Tests for L{zotwist.config}: zot's JSON config read into frozen objects, with
one-line errors, warnings for what zotwist ignores, and refusals for access
settings it cannot honour yet.
"""

import copy
import dataclasses
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from zotwist import DIST_SPEC_VERSION
from zotwist.config import (
    ACCEPTED,
    IMPLEMENTED,
    NOT_IMPLEMENTED,
    REFUSED,
    Config,
    ConfigError,
    HTTPConfig,
    RedisCacheConfig,
    S3DriverConfig,
    keyStatuses,
    loadConfig,
    parseConfig,
    parseDuration,
)

#: The smallest config zot starts with.
MINIMAL = {
    "distSpecVersion": DIST_SPEC_VERSION,
    "storage": {"rootDirectory": "/var/lib/zot"},
    "http": {"address": "127.0.0.1", "port": "8080"},
    "log": {"level": "debug"},
}

#: A storage section on S3 with Redis, with every s3 parameter zotwist uses.
S3_STORAGE = {
    "rootDirectory": "/var/lib/zot",
    "remoteCache": True,
    "redirectBlobURL": True,
    "storageDriver": {
        "name": "s3",
        "rootdirectory": "/zot",
        "region": "us-east-1",
        "regionendpoint": "http://127.0.0.1:7480",
        "bucket": "zot-storage",
        "secure": False,
        "skipverify": "true",
        "accesskey": "AK",
        "secretkey": "SK",
        "forcepathstyle": True,
    },
    "cacheDriver": {"name": "redis", "url": "redis://127.0.0.1:6379/0"},
}

#: The access settings of the SPEC-NOTES 2.9 example, which zotwist refuses.
ACCESS = {
    "tls": {
        "cert": "/etc/zot/server.crt",
        "key": "/etc/zot/server.key",
        "cacert": "/etc/zot/ca.crt",
    },
    "auth": {
        "htpasswd": {"path": "/etc/zot/htpasswd"},
        "ldap": {
            "address": "ldap.example.org",
            "port": 389,
            "startTLS": True,
            "baseDN": "ou=Users,dc=example,dc=org",
            "userAttribute": "uid",
            "userGroupAttribute": "memberOf",
            "credentialsFile": "/etc/zot/ldap-creds.json",
        },
        "failDelay": 5,
    },
    "accessControl": {
        "groups": {"devs": {"users": ["alice", "bob"]}},
        "repositories": {
            "**": {
                "policies": [
                    {"groups": ["devs"], "actions": ["read", "create", "update"]}
                ],
                "defaultPolicy": ["read"],
                "anonymousPolicy": ["read"],
            },
            "prod/**": {"policies": [{"users": ["ci"], "actions": ["read", "create"]}]},
        },
        "adminPolicy": {
            "users": ["admin"],
            "actions": ["read", "create", "update", "delete"],
        },
        "metrics": {"users": ["prometheus"]},
    },
}

#: The SPEC-NOTES 2.9 example without the keys in L{ACCESS}.
FULL = {
    "distSpecVersion": "1.1.1",
    "storage": {
        "rootDirectory": "/var/lib/zot",
        "dedupe": True,
        "gc": True,
        "gcDelay": "1h",
        "gcInterval": "24h",
        "commit": True,
        "maxRepos": 0,
        "retention": {
            "dryRun": False,
            "delay": "24h",
            "policies": [
                {
                    "repositories": ["tmp/**"],
                    "deleteUntagged": True,
                    "keepTags": [{"patterns": ["v.*"], "mostRecentlyPushedCount": 10}],
                }
            ],
        },
        "subPaths": {
            "/ci": {"rootDirectory": "/var/lib/zot-ci", "dedupe": False, "gc": True}
        },
    },
    "http": {
        "address": "0.0.0.0",
        "port": "5000",
        "realm": "zot",
        "readTimeout": "1h",
        "writeTimeout": "1h",
        "ratelimit": {"rate": 100, "methods": [{"method": "GET", "rate": 50}]},
        "compat": ["docker2s2"],
    },
    "log": {
        "level": "info",
        "output": "/var/log/zot/zot.log",
        "audit": "/var/log/zot/audit.log",
    },
    "extensions": {
        "metrics": {"enable": True, "prometheus": {"path": "/metrics"}},
        "scrub": {"enable": True, "interval": "24h"},
        "lint": {
            "enable": True,
            "mandatoryAnnotations": ["org.opencontainers.image.source"],
        },
        "search": {"enable": True, "cve": {"updateInterval": "2h"}},
        "ui": {"enable": True},
        "sync": {
            "enable": True,
            "registries": [
                {
                    "urls": ["https://registry-1.docker.io"],
                    "onDemand": True,
                    "tlsVerify": True,
                    "content": [{"prefix": "**", "destination": "/docker.io"}],
                }
            ],
        },
    },
}


def withKeys(base: dict, **sections: dict) -> dict:
    """
    A deep copy of C{base} with keys merged into its top-level sections, for
    one-line variations of a config in tests.
    """
    document = copy.deepcopy(base)
    for section, keys in sections.items():
        if isinstance(keys, dict) and isinstance(document.get(section), dict):
            document[section].update(keys)
        else:
            document[section] = keys
    return document


class ConfigErrorMixin:
    """
    Assertions about refused documents.
    """

    def assertRefused(self, document, expected: str, source: str = "<config>") -> None:
        """
        Assert that C{document} fails to parse with exactly C{expected}, on
        one line.
        """
        error = self.assertRaises(ConfigError, parseConfig, document, source)
        self.assertEqual(str(error), expected)
        self.assertNotIn("\n", str(error))


class LoadFileTests(ConfigErrorMixin, SynchronousTestCase):
    """
    L{loadConfig} reads a file, and every way a file can be unusable ends in
    one line naming it.
    """

    def writeConfig(self, content, name: str = "config.json") -> str:
        """
        Write C{content} (a document, or text as it is) to a fresh file.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, name)
        text = content if isinstance(content, str) else json.dumps(content, indent=2)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_loads(self):
        """
        A zot config file loads, and the result remembers where it came from
        and what the file said.
        """
        path = self.writeConfig(MINIMAL)
        config = loadConfig(path)
        self.assertIsInstance(config, Config)
        self.assertEqual(config.source, path)
        self.assertEqual(config.raw, MINIMAL)
        self.assertEqual(config.storage.rootDirectory, "/var/lib/zot")

    def test_missingFile(self):
        """
        A file that does not exist is named with the system's reason.
        """
        path = os.path.abspath(self.mktemp())
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error), f"{path}: cannot read the file: No such file or directory"
        )

    def test_unreadable(self):
        """
        A path that cannot be read as a file (here a directory, which even
        root cannot read) is named with the system's reason.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(str(error), f"{path}: cannot read the file: Is a directory")

    def test_badJSON(self):
        """
        Broken JSON is reported with the line and column where parsing
        stopped.
        """
        path = self.writeConfig(
            '{\n  "storage": {\n    "rootDirectory": "/x",\n  }\n}\n'
        )
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error),
            f"{path}: line 4, column 3: invalid JSON: "
            "Expecting property name enclosed in double quotes",
        )
        self.assertIsNone(error.keyPath)

    def test_yamlHint(self):
        """
        zot also reads YAML; a YAML file that is not JSON says that zotwist
        reads JSON only.
        """
        path = self.writeConfig("storage:\n  rootDirectory: /x\n", name="config.yaml")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertIn("zotwist reads zot's JSON config only", str(error))
        self.assertTrue(
            str(error).startswith(f"{path}: line 1, column 1: invalid JSON")
        )

    def test_emptyFile(self):
        """
        An empty file is called empty rather than "Expecting value".
        """
        path = self.writeConfig("  \n")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error), f"{path}: the file is empty; expected a JSON object"
        )

    def test_notUTF8(self):
        """
        Bytes that are not UTF-8 are refused with their offset.
        """
        path = self.writeConfig("")
        with open(path, "wb") as f:
            f.write(b'{"storage": "\xff"}')
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(str(error), f"{path}: not UTF-8 text (byte 13)")

    def test_notANumber(self):
        """
        C{NaN}, which Python's JSON parser accepts and JSON does not, is
        refused.
        """
        path = self.writeConfig('{"storage": {"rootDirectory": "/x", "maxRepos": NaN}}')
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(str(error), f"{path}: invalid JSON: NaN is not JSON")

    def test_topLevelNotObject(self):
        """
        A JSON document that is not an object is refused, naming what it is.
        """
        path = self.writeConfig([MINIMAL])
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error), f"{path}: expected a JSON object at the top level, got an array"
        )

    def test_errorNamesFile(self):
        """
        Errors inside the document name the file as it was given, then the
        key path.
        """
        path = self.writeConfig(withKeys(MINIMAL, http={"port": "eighty"}))
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(error.source, path)
        self.assertEqual(error.keyPath, "http.port")
        self.assertTrue(str(error).startswith(f"{path}: http.port: expected a port"))

    def test_parseConfigSource(self):
        """
        L{parseConfig} names its document C{<config>} unless told otherwise.
        """
        self.assertRefused({}, "<config>: storage.rootDirectory: required, but missing")
        self.assertRefused(
            {}, "zot.json: storage.rootDirectory: required, but missing", "zot.json"
        )


class DefaultsTests(SynchronousTestCase):
    """
    What a minimal config gives, which is what zot gives.
    """

    def test_minimal(self):
        """
        A config with only a root directory gets zot's defaults everywhere.
        """
        config = parseConfig({"storage": {"rootDirectory": "/srv/zot"}})
        self.assertEqual(config.distSpecVersion, DIST_SPEC_VERSION)
        self.assertEqual(config.storage.rootDirectory, "/srv/zot")
        self.assertTrue(config.storage.dedupe)
        self.assertTrue(config.storage.gc)
        self.assertEqual(config.storage.gcDelay, 3600.0)
        self.assertEqual(config.storage.gcInterval, 3600.0)
        self.assertFalse(config.storage.commit)
        self.assertEqual(config.storage.maxRepos, 0)
        self.assertEqual(config.storage.subPaths, {})
        self.assertIsNone(config.storage.storageDriver)
        self.assertEqual(config.http, HTTPConfig())
        self.assertEqual(config.http.address, "127.0.0.1")
        self.assertEqual(config.http.port, 8080)
        self.assertEqual(config.http.realm, "zot")
        self.assertIsNone(config.http.readTimeout)
        self.assertEqual(config.http.compat, ())
        self.assertEqual(config.log.level, "debug")
        self.assertIsNone(config.log.output)
        self.assertIsNone(config.log.audit)
        self.assertIsNone(config.extensions)
        self.assertIsNone(config.scheduler)
        self.assertIsNone(config.cluster)
        self.assertEqual(config.warnings, ())
        self.assertEqual(config.source, "<config>")

    def test_frozen(self):
        """
        Config objects cannot be changed after loading.
        """
        config = parseConfig(MINIMAL)
        self.assertRaises(
            dataclasses.FrozenInstanceError, setattr, config.http, "port", 1
        )
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, config, "log", None)

    def test_rawIsACopy(self):
        """
        L{Config.raw} is the document as parsed, and changing the document
        afterwards does not change it.
        """
        document = copy.deepcopy(MINIMAL)
        config = parseConfig(document)
        document["storage"]["rootDirectory"] = "/elsewhere"
        self.assertEqual(config.raw, MINIMAL)

    def test_relativeRootMadeAbsolute(self):
        """
        A relative root directory is made absolute against the current
        directory, as zot resolves it.
        """
        config = parseConfig({"storage": {"rootDirectory": "data/zot"}})
        self.assertEqual(
            config.storage.rootDirectory, os.path.join(os.getcwd(), "data", "zot")
        )

    def test_portForms(self):
        """
        The port may be zot's string form or a number; C{0} (an ephemeral
        port, used by tests) is allowed.
        """
        for given, port in [("5000", 5000), (5000, 5000), ("0", 0), (0, 0)]:
            config = parseConfig(withKeys(MINIMAL, http={"port": given}))
            self.assertEqual(config.http.port, port)

    def test_logLevelCase(self):
        """
        Log levels are matched without regard to case and stored lower-case.
        """
        for given, level in [("WARN", "warn"), ("Info", "info"), ("panic", "panic")]:
            config = parseConfig(withKeys(MINIMAL, log={"level": given}))
            self.assertEqual(config.log.level, level)

    def test_logOutput(self):
        """
        C{log.output} names a file; an empty string means standard output,
        as in zot.
        """
        config = parseConfig(withKeys(MINIMAL, log={"output": "/var/log/zot.log"}))
        self.assertEqual(config.log.output, "/var/log/zot.log")
        config = parseConfig(withKeys(MINIMAL, log={"output": ""}))
        self.assertIsNone(config.log.output)

    def test_nullIsAbsent(self):
        """
        A key given as null is treated as not given, as zot's loader does.
        """
        config = parseConfig(withKeys(MINIMAL, http={"port": None, "tls": None}))
        self.assertEqual(config.http.port, 8080)
        self.assertIsNone(config.http.tls)

    def test_keyCaseIgnored(self):
        """
        zot's loader does not tell key case apart, so neither does zotwist:
        a zot config spelling C{rootdirectory} or C{DistSpecVersion} loads.
        """
        config = parseConfig(
            {"DistSpecVersion": DIST_SPEC_VERSION, "storage": {"rootdirectory": "/z"}}
        )
        self.assertEqual(config.storage.rootDirectory, "/z")
        self.assertEqual(config.warnings, ())

    def test_timeoutsAccepted(self):
        """
        C{readTimeout} and C{writeTimeout} are parsed and exposed without a
        warning: zotwist deliberately has no whole-body read timeout.
        """
        config = parseConfig(
            withKeys(MINIMAL, http={"readTimeout": "1h", "writeTimeout": "90s"})
        )
        self.assertEqual(config.http.readTimeout, 3600.0)
        self.assertEqual(config.http.writeTimeout, 90.0)
        self.assertEqual(config.warnings, ())


class FullExampleTests(ConfigErrorMixin, SynchronousTestCase):
    """
    The complete example config of SPEC-NOTES 2.9.
    """

    def test_loads(self):
        """
        Without its access settings, the example loads, with every value
        typed.
        """
        config = parseConfig(FULL, "zot.json")
        storage = config.storage
        self.assertEqual(storage.rootDirectory, "/var/lib/zot")
        self.assertEqual(storage.gcDelay, 3600.0)
        self.assertEqual(storage.gcInterval, 86400.0)
        self.assertTrue(storage.commit)
        self.assertEqual(storage.retention.delay, 86400.0)
        policy = storage.retention.policies[0]
        self.assertEqual(policy.repositories, ("tmp/**",))
        self.assertTrue(policy.deleteUntagged)
        self.assertFalse(policy.deleteReferrers)
        self.assertEqual(policy.keepTags[0].patterns, ("v.*",))
        self.assertEqual(policy.keepTags[0].mostRecentlyPushedCount, 10)
        subPath = storage.subPaths["/ci"]
        self.assertEqual(subPath.rootDirectory, "/var/lib/zot-ci")
        self.assertFalse(subPath.dedupe)
        self.assertTrue(subPath.gc)

        http = config.http
        self.assertEqual((http.address, http.port), ("0.0.0.0", 5000))
        self.assertEqual(http.readTimeout, 3600.0)
        self.assertEqual(http.ratelimit.rate, 100)
        self.assertEqual(http.ratelimit.methods[0].method, "GET")
        self.assertEqual(http.ratelimit.methods[0].rate, 50)
        self.assertEqual(http.compat, ("docker2s2",))
        self.assertIsNone(http.tls)

        self.assertEqual(config.log.level, "info")
        self.assertEqual(config.log.output, "/var/log/zot/zot.log")
        self.assertEqual(config.log.audit, "/var/log/zot/audit.log")

        extensions = config.extensions
        self.assertTrue(extensions.metrics.enable)
        self.assertEqual(extensions.metrics.prometheus.path, "/metrics")
        self.assertTrue(extensions.scrub.enable)
        self.assertEqual(extensions.scrub.interval, 86400.0)
        self.assertEqual(
            extensions.lint.mandatoryAnnotations, ("org.opencontainers.image.source",)
        )
        self.assertEqual(extensions.search.cve.updateInterval, 7200.0)
        self.assertTrue(extensions.ui.enable)
        self.assertEqual(
            extensions.sync["registries"][0]["urls"], ["https://registry-1.docker.io"]
        )
        self.assertIsNone(extensions.trust)

    def test_warnings(self):
        """
        Every key zot knows and zotwist ignores is named once, at the
        outermost ignored key, in the order of the schema.
        """
        config = parseConfig(FULL)
        self.assertEqual(
            config.warnings,
            tuple(
                f"{key}: not implemented by zotwist yet; ignored"
                for key in [
                    "storage.maxRepos",
                    "http.compat",
                    "extensions.search",
                    "extensions.sync",
                    "extensions.lint",
                    "extensions.ui",
                ]
            ),
        )

    def test_withAccessLoads(self):
        """
        The example as written, with TLS, logins, policies and a rate limit,
        loads: every access key in it is implemented.  (Whether the files it
        names exist is checked when the server is built.)
        """
        config = parseConfig(withKeys(FULL, http=ACCESS))
        self.assertEqual(config.http.tls.cacert, "/etc/zot/ca.crt")
        self.assertEqual(config.http.auth.ldap.userGroupAttribute, "memberOf")
        self.assertEqual(config.http.auth.failDelay, 5)
        self.assertEqual(
            config.http.accessControl.repositories["prod/**"].policies[0].users, ("ci",)
        )

    def test_eachAccessKeyRefused(self):
        """
        Each access setting zotwist does not implement yet is refused on its
        own, naming what the registry would lack.
        """
        for keys, path, lacking in [
            ({"auth": {"openid": {"providers": {}}}}, "http.auth.openid", "OpenID authentication"),
            ({"auth": {"apikey": True}}, "http.auth.apikey", "API keys"),
            (
                {"auth": {"sessionKeysFile": "/k.json"}},
                "http.auth.sessionKeysFile",
                "login sessions",
            ),
        ]:
            self.assertRefused(
                withKeys(FULL, http=keys),
                f"<config>: {path}: not implemented by zotwist yet, and zotwist "
                f"refuses to start rather than serve without {lacking}",
            )

    def test_accessControlNeedsAuthentication(self):
        """
        zot's C{verify} rule: access control with user, group, default or
        admin policies needs an authentication method to tell users apart.
        """
        self.assertRefused(
            withKeys(FULL, http={"accessControl": ACCESS["accessControl"]}),
            "<config>: http.accessControl: needs an authentication method (http.auth "
            "htpasswd, ldap, openid, apikey or bearer, or client certificates through "
            "http.tls.cacert), or only anonymousPolicy entries",
        )

    def test_emptyAccessKeyRefused(self):
        """
        Even an empty TLS section is refused: its presence asks for HTTPS,
        which cannot be served without a certificate and key, and guessing
        what it meant could fail open.  An empty C{http.auth} names no
        method, so it loads and authenticates nobody, as in zot.
        """
        self.assertRefused(
            withKeys(MINIMAL, http={"tls": {}}),
            "<config>: http.tls.cert: required when http.tls is given",
        )
        config = parseConfig(withKeys(MINIMAL, http={"auth": {}}))
        self.assertFalse(config.http.auth.hasAuthentication())


class WarningTests(SynchronousTestCase):
    """
    Warnings name what zotwist ignores, and only that.
    """

    def test_distSpecVersion(self):
        """
        A different C{distSpecVersion} warns, and the config carries the
        version zotwist speaks, as zot does.
        """
        config = parseConfig(withKeys(MINIMAL, distSpecVersion="1.0.1"))
        self.assertEqual(
            config.warnings,
            (
                (
                    "distSpecVersion: the config says 1.0.1, but the server speaks "
                    f"{DIST_SPEC_VERSION} and uses that"
                ),
            ),
        )
        self.assertEqual(config.distSpecVersion, DIST_SPEC_VERSION)
        self.assertEqual(config.raw["distSpecVersion"], "1.0.1")

    def test_implementedKeysDoNotWarn(self):
        """
        The keys zotwist implements load without a warning.
        """
        config = parseConfig(
            {
                "distSpecVersion": DIST_SPEC_VERSION,
                "storage": {"rootDirectory": "/z"},
                "http": {"address": "::1", "port": 0},
                "log": {"level": "error", "output": "/tmp/zot.log"},
                "extensions": {},
            }
        )
        self.assertEqual(config.warnings, ())

    def test_extensionWarning(self):
        """
        An extension warns with its own path, as the brief's example says.
        """
        config = parseConfig(withKeys(MINIMAL, extensions={"search": {}}))
        self.assertEqual(
            config.warnings,
            ("extensions.search: not implemented by zotwist yet; ignored",),
        )
        self.assertTrue(config.extensions.search.enable)

    def test_schedulerAndCluster(self):
        """
        C{scheduler} and C{cluster} load typed, with a warning each.
        """
        config = parseConfig(
            withKeys(
                MINIMAL,
                scheduler={"numWorkers": 8},
                cluster={
                    "members": ["a:5000", "b:5000"],
                    "hashKey": "0123456789abcdef",
                },
            )
        )
        self.assertEqual(config.scheduler.numWorkers, 8)
        self.assertEqual(config.cluster.members, ("a:5000", "b:5000"))
        self.assertEqual(
            config.warnings,
            (
                "scheduler: not implemented by zotwist yet; ignored",
                "cluster: not implemented by zotwist yet; ignored",
            ),
        )

    def test_drivers(self):
        """
        Storage and cache driver parameters are kept as written, including
        the ones zotwist ignores, and each ignored one warns on its own: the
        s3 parameters zot's driver knows as not implemented, others as
        possibly misspelt, and every redis parameter but C{url}.
        """
        driver = {
            "name": "s3",
            "rootdirectory": "/zot",
            "region": "us-east-2",
            "bucket": "zot-storage",
            "secure": True,
            "skipverify": False,
            "multipartcopythresholdsize": 5368709120,
            "chunkSize": 10485760,
            "bukket": "typo",
        }
        cache = {"name": "redis", "url": "redis://127.0.0.1:6379/0", "keyprefix": "zot"}
        config = parseConfig(
            withKeys(
                MINIMAL,
                storage={
                    "storageDriver": driver,
                    "cacheDriver": cache,
                    "remoteCache": True,
                    "redirectBlobURL": True,
                },
            )
        )
        self.assertEqual(config.storage.storageDriver, driver)
        self.assertEqual(config.storage.cacheDriver, cache)
        self.assertEqual(
            config.warnings,
            (
                "storage.storageDriver.multipartcopythresholdsize: not implemented by "
                "zotwist yet; ignored",
                "storage.storageDriver.chunkSize: not implemented by zotwist yet; ignored",
                "storage.storageDriver.bukket: not a parameter of zot's s3 driver "
                "(misspelt?); ignored",
                "storage.cacheDriver.keyprefix: not implemented by zotwist yet; ignored",
            ),
        )

    def test_s3DriverDoesNotWarn(self):
        """
        The s3 parameters zotwist implements, with a redis cache, load
        without a warning.
        """
        config = parseConfig(withKeys(MINIMAL, storage=S3_STORAGE))
        self.assertEqual(config.warnings, ())
        self.assertEqual(config.storage.driverName, "s3")
        self.assertEqual(
            config.storage.s3,
            S3DriverConfig(
                bucket="zot-storage",
                region="us-east-1",
                rootdirectory="/zot",
                regionendpoint="http://127.0.0.1:7480",
                secure=False,
                skipverify=True,
                accesskey="AK",
                secretkey="SK",
                forcepathstyle=True,
            ),
        )
        self.assertEqual(config.storage.redis, RedisCacheConfig("redis://127.0.0.1:6379/0"))
        self.assertTrue(config.storage.redirectBlobURL)
        defaults = S3DriverConfig.fromDriver({"name": "s3", "Bucket": "b", "region": "r"})
        self.assertEqual(
            (defaults.rootdirectory, defaults.regionendpoint, defaults.secure),
            ("", None, True),
        )
        self.assertEqual(
            (defaults.skipverify, defaults.accesskey, defaults.forcepathstyle),
            (False, None, False),
        )

    def test_exampleS3Config(self):
        """
        The S3 example shipped in C{conf/config-s3.json} loads without a
        warning.
        """
        path = os.path.join(os.path.dirname(__file__), os.pardir, "conf", "config-s3.json")
        config = loadConfig(path)
        self.assertEqual(config.warnings, ())
        self.assertEqual(config.storage.s3.bucket, "zot-storage")
        self.assertEqual(config.storage.redis.url, "redis://redis.internal:6379/0")

    def test_retentionOnS3(self):
        """
        Retention applies on S3: it loads without a warning, its policies
        parsed as on local storage.
        """
        storage = dict(S3_STORAGE, retention={"dryRun": True, "policies": [
            {"repositories": ["**"], "keepTags": [{"mostRecentlyPushedCount": 2}]}]})
        config = parseConfig(withKeys(MINIMAL, storage=storage))
        self.assertEqual(config.warnings, ())
        self.assertEqual(config.storage.driverName, "s3")
        self.assertTrue(config.storage.retention.dryRun)
        self.assertEqual(
            config.storage.retention.policies[0].keepTags[0].mostRecentlyPushedCount, 2
        )

    def test_cacheDriverOnLocalStorage(self):
        """
        A cache driver on local storage without C{remoteCache} is ignored
        with a warning, as zot ignores it.
        """
        config = parseConfig(
            withKeys(MINIMAL, storage={"cacheDriver": {"name": "boltdb", "rootDir": "/x"}})
        )
        self.assertEqual(
            config.warnings,
            (
                "storage.cacheDriver: ignored without remoteCache, as zot does; the "
                "local store needs no cache",
            ),
        )
        self.assertIsNone(config.storage.redis)
        self.assertIsNone(config.storage.s3)
        self.assertEqual(config.storage.driverName, "local")


class ErrorTests(ConfigErrorMixin, SynchronousTestCase):
    """
    Each kind of mistake ends in one line naming the key path and what was
    expected.
    """

    def test_unknownTopLevelKey(self):
        """
        An unknown top-level key is refused, as zot does, with a suggestion
        when a known key is close.
        """
        self.assertRefused(
            withKeys(MINIMAL, htpp={}),
            '<config>: htpp: unknown key (did you mean "http"?); zot rejects unknown keys',
        )

    def test_unknownKeyListsKnownKeys(self):
        """
        When nothing is close, the message lists the keys that are allowed
        there.
        """
        self.assertRefused(
            withKeys(MINIMAL, log={"colour": True}),
            "<config>: log.colour: unknown key (known keys here: level, output, audit); "
            "zot rejects unknown keys",
        )

    def test_unknownNestedKey(self):
        """
        Unknown keys are refused at any depth, with the full path.
        """
        self.assertRefused(
            withKeys(MINIMAL, http={"prot": "5000"}),
            '<config>: http.prot: unknown key (did you mean "port"?); '
            "zot rejects unknown keys",
        )
        self.assertRefused(
            withKeys(
                MINIMAL,
                storage={"subPaths": {"/a": {"rootDirectory": "/a", "gcdelya": "1h"}}},
            ),
            '<config>: storage.subPaths["/a"].gcdelya: unknown key (did you mean '
            '"gcDelay"?); zot rejects unknown keys',
        )
        self.assertRefused(
            withKeys(MINIMAL, extensions={"metrics": {"prometheus": {"route": "/m"}}}),
            "<config>: extensions.metrics.prometheus.route: unknown key (known keys "
            "here: path); zot rejects unknown keys",
        )

    def test_keyGivenTwice(self):
        """
        One key spelt twice in different case is ambiguous, and refused.
        """
        self.assertRefused(
            withKeys(MINIMAL, storage={"rootdirectory": "/other"}),
            '<config>: storage.rootDirectory: given twice, as "rootDirectory" and '
            '"rootdirectory" (zot does not tell key case apart)',
        )

    def test_wrongTypes(self):
        """
        A value of the wrong JSON type names what was expected and what was
        found.
        """
        cases = [
            (
                withKeys(MINIMAL, storage={"dedupe": "yes"}),
                'storage.dedupe: expected true or false, got a string ("yes")',
            ),
            (
                withKeys(MINIMAL, http={"address": 127}),
                "http.address: expected a string, got a number (127)",
            ),
            (
                withKeys(MINIMAL, storage={"maxRepos": 1.5}),
                "storage.maxRepos: expected a whole number >= 0, got a number (1.5)",
            ),
            (
                withKeys(MINIMAL, storage={"maxRepos": -1}),
                "storage.maxRepos: expected a whole number >= 0, got a number (-1)",
            ),
            (
                withKeys(MINIMAL, http="0.0.0.0:5000"),
                'http: expected an object, got a string ("0.0.0.0:5000")',
            ),
            (
                withKeys(MINIMAL, http={"compat": "docker2s2"}),
                'http.compat: expected an array, got a string ("docker2s2")',
            ),
            (
                withKeys(MINIMAL, http={"compat": ["oci"]}),
                'http.compat[0]: expected one of "docker2s2", got a string ("oci")',
            ),
            (
                withKeys(MINIMAL, log={"level": "verbose"}),
                (
                    'log.level: expected one of "debug", "info", "warn", "error", '
                    '"panic", "fatal", got a string ("verbose")'
                ),
            ),
            (
                withKeys(MINIMAL, extensions={"lint": {"mandatoryAnnotations": [1]}}),
                (
                    "extensions.lint.mandatoryAnnotations[0]: expected a string, "
                    "got a number (1)"
                ),
            ),
            (
                withKeys(MINIMAL, extensions={"sync": []}),
                "extensions.sync: expected an object, got an array",
            ),
            (
                withKeys(MINIMAL, storage={"rootDirectory": ""}),
                "storage.rootDirectory: expected a non-empty string",
            ),
        ]
        for document, expected in cases:
            self.assertRefused(document, f"<config>: {expected}")

    def test_badPort(self):
        """
        A port must be a whole number from 0 to 65535, as a string or a
        number; booleans and words are not ports.
        """
        expected = (
            'a port number from 0 to 65535 (a string such as "8080", or a number)'
        )
        for port, described in [
            ("eighty", 'a string ("eighty")'),
            ("65536", 'a string ("65536")'),
            (-1, "a number (-1)"),
            (True, "a boolean (true)"),
            ("", 'a string ("")'),
        ]:
            self.assertRefused(
                withKeys(MINIMAL, http={"port": port}),
                f"<config>: http.port: expected {expected}, got {described}",
            )

    def test_badDuration(self):
        """
        Durations must be Go duration strings; a number (which zot would
        read as nanoseconds) is refused.
        """
        self.assertRefused(
            withKeys(MINIMAL, storage={"gcDelay": "1 hour"}),
            '<config>: storage.gcDelay: invalid duration "1 hour": expected numbers '
            'with units (ns, us, ms, s, m, h), such as "30m", "1h30m" or "500ms"',
        )
        self.assertRefused(
            withKeys(MINIMAL, storage={"gcInterval": 3600}),
            "<config>: storage.gcInterval: expected a Go duration string such as "
            '"1h30m", got a number (3600)',
        )

    def test_durationsPositive(self):
        """
        GC timings must be positive while GC is on (zot's verify check), and
        never negative; intervals such as scrub's must be positive.
        """
        self.assertRefused(
            withKeys(MINIMAL, storage={"gcDelay": "0s"}),
            "<config>: storage.gcDelay: expected a duration greater than zero "
            "while gc is enabled",
        )
        self.assertRefused(
            withKeys(MINIMAL, storage={"gc": False, "gcInterval": "-1h"}),
            "<config>: storage.gcInterval: expected a duration of zero or more",
        )
        self.assertRefused(
            withKeys(
                MINIMAL,
                storage={
                    "subPaths": {
                        "/a": {"rootDirectory": "/a", "gc": True, "gcInterval": "0"}
                    }
                },
            ),
            '<config>: storage.subPaths["/a"].gcInterval: expected a duration '
            "greater than zero while gc is enabled",
        )
        self.assertRefused(
            withKeys(MINIMAL, extensions={"scrub": {"interval": "0s"}}),
            "<config>: extensions.scrub.interval: expected a duration greater "
            "than zero, got '0s'",
        )
        config = parseConfig(withKeys(MINIMAL, storage={"gc": False, "gcDelay": "0s"}))
        self.assertEqual(config.storage.gcDelay, 0.0)

    def test_missingRoot(self):
        """
        zot requires a storage root: without C{storage}, or without the key,
        or with it null, loading stops at C{storage.rootDirectory}.
        """
        self.assertRefused(
            {"http": {"port": "5000"}},
            "<config>: storage.rootDirectory: required, but missing",
        )
        self.assertRefused(
            {"storage": {"dedupe": False}},
            "<config>: storage.rootDirectory: required, but missing",
        )
        self.assertRefused(
            {"storage": {"rootDirectory": None}},
            "<config>: storage.rootDirectory: expected a directory path, got null",
        )

    def test_subPathRoots(self):
        """
        Sub-path roots must not equal or nest in the main root or in each
        other (zot's verify check).
        """

        def subPaths(root, **roots):
            """
            A config with main root C{root} and one sub-path per keyword.
            """
            return {
                "storage": {
                    "rootDirectory": root,
                    "subPaths": {
                        f"/{name}": {"rootDirectory": path}
                        for name, path in roots.items()
                    },
                }
            }

        self.assertRefused(
            subPaths("/srv/zot", a="/srv/zot/"),
            '<config>: storage.subPaths["/a"].rootDirectory: same directory as '
            "storage.rootDirectory (/srv/zot)",
        )
        self.assertRefused(
            subPaths("/srv/zot", a="/srv/zot/a"),
            '<config>: storage.subPaths["/a"].rootDirectory: /srv/zot/a is inside '
            "storage.rootDirectory (/srv/zot); store roots must not nest",
        )
        self.assertRefused(
            subPaths("/srv/zot/main", a="/srv/zot"),
            "<config>: storage.rootDirectory: /srv/zot/main is inside "
            'storage.subPaths["/a"].rootDirectory (/srv/zot); store roots must not nest',
        )
        self.assertRefused(
            subPaths("/srv/zot", a="/srv/a", b="/srv/a/b"),
            '<config>: storage.subPaths["/b"].rootDirectory: /srv/a/b is inside '
            'storage.subPaths["/a"].rootDirectory (/srv/a); store roots must not nest',
        )
        config = parseConfig(subPaths("/srv/zot", a="/srv/zot-a", b="/srv/zot-b"))
        self.assertEqual(sorted(config.storage.subPaths), ["/a", "/b"])

    def test_subPathRoute(self):
        """
        A sub-path key is one leading path component (zot routes by the
        first component of a repository name only); anything else is
        refused, naming the key.
        """
        for route, key in [("ci", "ci"), ("/ci/tools", '["/ci/tools"]'), ("/", '["/"]'),
                           ("//ci", '["//ci"]')]:
            self.assertRefused(
                {"storage": {"rootDirectory": "/srv/zot",
                             "subPaths": {route: {"rootDirectory": "/srv/ci"}}}},
                f"<config>: storage.subPaths{'.' if key == 'ci' else ''}{key}: a sub-path is"
                ' one leading path component such as "/ci": zot routes a repository by the'
                " first component of its name only",
            )
        config = parseConfig({"storage": {"rootDirectory": "/srv/zot", "subPaths": {
            "/ci/": {"rootDirectory": "/srv/ci", "gc": True, "gcTimeWindow": "1:00-2:00"}}}})
        self.assertEqual(config.storage.subPaths["/ci/"].gcTimeWindow, "01:00-02:00")
        self.assertEqual(config.warnings, ())

    def test_storageDrivers(self):
        """
        A storage driver needs a supported name, and the parameters zotwist
        knows must have the right type; a cache driver needs a known name.
        """
        self.assertRefused(
            withKeys(MINIMAL, storage={"storageDriver": {"bucket": "b"}}),
            "<config>: storage.storageDriver.name: required, but missing "
            '(one of "local", "s3", "gcs", "azure")',
        )
        self.assertRefused(
            withKeys(MINIMAL, storage={"storageDriver": {"name": "ftp"}}),
            '<config>: storage.storageDriver.name: expected one of "local", "s3", '
            '"gcs", "azure", got a string ("ftp")',
        )
        self.assertRefused(
            withKeys(MINIMAL, storage={"storageDriver": {"name": "s3", "bucket": 7}}),
            "<config>: storage.storageDriver.bucket: expected a string, got a number (7)",
        )
        self.assertRefused(
            withKeys(MINIMAL, storage={"cacheDriver": {"name": "memcached"}}),
            '<config>: storage.cacheDriver.name: expected one of "boltdb", '
            '"dynamodb", "redis", got a string ("memcached")',
        )

    def test_s3Driver(self):
        """
        The s3 driver needs a bucket and a region, as zot's does, and its
        booleans are JSON booleans or Go's spellings of them.
        """
        for missing in ("bucket", "region"):
            storage = copy.deepcopy(S3_STORAGE)
            del storage["storageDriver"][missing]
            self.assertRefused(
                withKeys(MINIMAL, storage=storage),
                f"<config>: storage.storageDriver.{missing}: required by the s3 driver, "
                "but missing",
            )
        storage = copy.deepcopy(S3_STORAGE)
        storage["storageDriver"]["secure"] = "yes"
        self.assertRefused(
            withKeys(MINIMAL, storage=storage),
            '<config>: storage.storageDriver.secure: expected true or false, got a '
            'string ("yes")',
        )

    def test_driversNotImplemented(self):
        """
        A gcs or azure store is refused rather than served from the local
        disk; a sub-path's storageDriver, not implemented at all yet, only
        warns.
        """
        self.assertRefused(
            withKeys(
                MINIMAL,
                storage={"storageDriver": {"name": "gcs", "bucket": "b"}, "remoteCache": True},
            ),
            "<config>: storage.storageDriver.name: the gcs driver is not implemented by "
            'zotwist yet (only "local" and "s3"), and serving from the local disk '
            "instead would put the data somewhere else",
        )
        config = parseConfig(
            withKeys(
                MINIMAL,
                storage={
                    "subPaths": {
                        "/a": {"rootDirectory": "/srv/a", "storageDriver": {"name": "azure"}}
                    }
                },
            )
        )
        self.assertEqual(
            config.warnings,
            ('storage.subPaths["/a"].storageDriver: not implemented by zotwist yet; ignored',),
        )

    def test_s3NeedsRedis(self):
        """
        An s3 store keeps its shared state in Redis even with one instance:
        without a redis cacheDriver, or without C{remoteCache} (without
        which zot ignores the cache driver), it is refused, naming the key.
        """
        storage = copy.deepcopy(S3_STORAGE)
        del storage["cacheDriver"]
        self.assertRefused(
            withKeys(MINIMAL, storage=storage),
            "<config>: storage.cacheDriver: required with an s3 storageDriver: zotwist "
            'keeps tags, uploads and locks in Redis ({"name": "redis", "url": '
            '"redis://HOST:6379/0"})',
        )
        storage["cacheDriver"] = {"name": "dynamodb", "endpoint": "http://localhost:4566"}
        self.assertRefused(
            withKeys(MINIMAL, storage=storage),
            '<config>: storage.cacheDriver.name: zotwist on s3 needs "redis", got a '
            'string ("dynamodb") (the dynamodb cache driver is not implemented)',
        )
        storage = copy.deepcopy(S3_STORAGE)
        storage["remoteCache"] = False
        self.assertRefused(
            withKeys(MINIMAL, storage=storage),
            "<config>: storage.remoteCache: must be true with an s3 storageDriver and a "
            "redis cacheDriver (zot ignores the cacheDriver without it)",
        )

    def test_s3WithSubPaths(self):
        """
        Sub-paths are local stores: with an s3 store they are refused, since
        the instances sharing the bucket would each keep their own.
        """
        storage = dict(S3_STORAGE, subPaths={"/ci": {"rootDirectory": "/srv/ci"}})
        self.assertRefused(
            withKeys(MINIMAL, storage=storage),
            "<config>: storage.subPaths: not supported with an s3 storageDriver yet: "
            "sub-paths are local stores, which the instances sharing the bucket cannot "
            "share",
        )

    def test_redisURL(self):
        """
        The redis cache driver needs a Redis C{url}; zot's address lists are
        not implemented.
        """
        storage = copy.deepcopy(S3_STORAGE)
        storage["cacheDriver"] = {"name": "redis", "addr": ["127.0.0.1:6379"]}
        self.assertRefused(
            withKeys(MINIMAL, storage=storage),
            "<config>: storage.cacheDriver.url: required by zotwist's redis cacheDriver "
            '(such as "redis://127.0.0.1:6379/0"); address lists, sentinels and clusters '
            "are not implemented yet",
        )
        storage["cacheDriver"] = {"name": "redis", "URL": "http://127.0.0.1:6379"}
        self.assertRefused(
            withKeys(MINIMAL, storage=storage),
            '<config>: storage.cacheDriver.URL: expected a Redis URL such as '
            '"redis://127.0.0.1:6379/0", got a string ("http://127.0.0.1:6379")',
        )

    def test_remoteOnlyKeys(self):
        """
        C{remoteCache} and C{redirectBlobURL} need a remote storage driver.
        """
        self.assertRefused(
            withKeys(MINIMAL, storage={"remoteCache": True}),
            "<config>: storage.remoteCache: local storage cannot use a remote "
            "cache; it needs an s3, gcs or azure storageDriver",
        )
        self.assertRefused(
            withKeys(MINIMAL, storage={"redirectBlobURL": True}),
            "<config>: storage.redirectBlobURL: only possible with an s3, gcs or "
            "azure storageDriver",
        )

    def test_gcTimeWindow(self):
        """
        C{gcTimeWindow} is C{"HH:MM-HH:MM"} with distinct ends, stored
        normalised.
        """
        config = parseConfig(withKeys(MINIMAL, storage={"gcTimeWindow": "22:00-6:30"}))
        self.assertEqual(config.storage.gcTimeWindow, "22:00-06:30")
        self.assertRefused(
            withKeys(MINIMAL, storage={"gcTimeWindow": "01:00-01:00"}),
            "<config>: storage.gcTimeWindow: start and end of the window cannot be "
            "equal",
        )
        self.assertRefused(
            withKeys(MINIMAL, storage={"gcTimeWindow": "24:00-01:00"}),
            "<config>: storage.gcTimeWindow: expected a time window such as "
            '"01:00-08:00", got a string ("24:00-01:00")',
        )

    def test_cluster(self):
        """
        A cluster needs members and a 16-character hash key.
        """
        self.assertRefused(
            withKeys(MINIMAL, cluster={"members": [], "hashKey": "0123456789abcdef"}),
            "<config>: cluster.members: expected at least one member",
        )
        self.assertRefused(
            withKeys(MINIMAL, cluster={"members": ["a:1"], "hashKey": "short"}),
            "<config>: cluster.hashKey: expected exactly 16 characters, got 5",
        )

    def test_metricsPath(self):
        """
        The metrics path must be an absolute path outside the registry API.
        """
        for path in ["metrics", "/", "/v2", "/v2/metrics"]:
            document = withKeys(
                MINIMAL, extensions={"metrics": {"prometheus": {"path": path}}}
            )
            self.assertRefused(
                document,
                "<config>: extensions.metrics.prometheus.path: expected an absolute "
                'URL path outside "/v2", such as "/metrics", got a string '
                f"({json.dumps(path)})",
            )

    def test_oddKeyStaysOneLine(self):
        """
        A key with a newline in it is quoted, so the message stays on one
        line.
        """
        self.assertRefused(
            withKeys(MINIMAL, **{"bad\nkey": 1}),
            '<config>: ["bad\\nkey"]: unknown key (known keys here: distSpecVersion, '
            "storage, http, log, extensions, scheduler, cluster); zot rejects "
            "unknown keys",
        )


class ParseDurationTests(SynchronousTestCase):
    """
    L{parseDuration} reads Go durations into seconds.
    """

    def test_values(self):
        """
        Go's units and combinations give the expected seconds.
        """
        for text, seconds in [
            ("1h", 3600.0),
            ("30m", 1800.0),
            ("1h30m", 5400.0),
            ("500ms", 0.5),
            ("2s", 2.0),
            ("24h", 86400.0),
            ("1.5h", 5400.0),
            (".5s", 0.5),
            ("1500us", 0.0015),
            ("1500\u00b5s", 0.0015),
            ("250ns", 2.5e-7),
            ("0", 0.0),
            ("-1m", -60.0),
            ("+2m3s", 123.0),
        ]:
            self.assertEqual(parseDuration(text), seconds, text)

    def test_invalidStrings(self):
        """
        Strings that are not Go durations raise L{ValueError} naming the
        format.
        """
        for text in ["", "1", "h", "1hour", "1 h", "1h-5m", "1d", "-", "1.h.5"]:
            error = self.assertRaises(ValueError, parseDuration, text)
            self.assertIn("expected numbers with units", str(error))

    def test_nonStrings(self):
        """
        Numbers and other non-strings raise L{TypeError}: zot would read a
        number as nanoseconds, which nobody means.
        """
        for value in [3600, 1.5, True, None, ["1h"]]:
            error = self.assertRaises(TypeError, parseDuration, value)
            self.assertIn('expected a Go duration string such as "1h30m"', str(error))

    def test_tooLong(self):
        """
        Durations beyond Go's range (about 292 years) are refused.
        """
        error = self.assertRaises(ValueError, parseDuration, "3000000h")
        self.assertEqual(str(error), 'duration "3000000h" is too long (over 292 years)')


class SchemaTests(SynchronousTestCase):
    """
    The declared statuses: what is implemented, ignored, refused.
    """

    def test_implemented(self):
        """
        Exactly the keys zotwist acts on are implemented (sections that only
        contain them count too); C{storage.commit} is passed to the store,
        which fsyncs before renaming, and C{storage.dedupe}, which links
        identical blobs (L{zotwist.storage.dedupe}); C{extensions.metrics}
        serves the Prometheus metrics (L{zotwist.ops.metrics}); C{storage.gc},
        C{gcDelay} and C{gcInterval} run the collector
        (L{zotwist.storage.gc}) and C{extensions.scrub} the scrub
        (L{zotwist.storage.scrub}); C{storage.storageDriver} (local or s3),
        C{cacheDriver} (redis), C{remoteCache} and C{redirectBlobURL} choose
        and configure the S3 store (L{zotwist.tap}).
        """
        implemented = sorted(
            key for key, status in keyStatuses().items() if status == IMPLEMENTED
        )
        self.assertEqual(
            implemented,
            [
                "distSpecVersion",
                "extensions",
                "extensions.metrics",
                "extensions.metrics.enable",
                "extensions.metrics.prometheus",
                "extensions.metrics.prometheus.path",
                "extensions.scrub",
                "extensions.scrub.enable",
                "extensions.scrub.interval",
                "http",
                "http.accessControl",
                "http.accessControl.adminPolicy",
                "http.accessControl.adminPolicy.actions",
                "http.accessControl.adminPolicy.groups",
                "http.accessControl.adminPolicy.users",
                "http.accessControl.groups",
                "http.accessControl.groups.*.users",
                "http.accessControl.repositories",
                "http.accessControl.repositories.*.anonymousPolicy",
                "http.accessControl.repositories.*.defaultPolicy",
                "http.accessControl.repositories.*.policies",
                "http.accessControl.repositories.*.policies[].actions",
                "http.accessControl.repositories.*.policies[].groups",
                "http.accessControl.repositories.*.policies[].users",
                "http.address",
                "http.auth",
                "http.auth.bearer",
                "http.auth.bearer.cert",
                "http.auth.bearer.realm",
                "http.auth.bearer.service",
                "http.auth.failDelay",
                "http.auth.htpasswd",
                "http.auth.htpasswd.path",
                "http.auth.ldap",
                "http.auth.ldap.address",
                "http.auth.ldap.baseDN",
                "http.auth.ldap.bindDN",
                "http.auth.ldap.bindPassword",
                "http.auth.ldap.caCert",
                "http.auth.ldap.credentialsFile",
                "http.auth.ldap.insecure",
                "http.auth.ldap.port",
                "http.auth.ldap.skipVerify",
                "http.auth.ldap.startTLS",
                "http.auth.ldap.subtreeSearch",
                "http.auth.ldap.userAttribute",
                "http.auth.ldap.userFilter",
                "http.auth.ldap.userGroupAttribute",
                "http.auth.mtls",
                "http.auth.mtls.dnsSanIndex",
                "http.auth.mtls.emailSanIndex",
                "http.auth.mtls.identityAttributes",
                "http.auth.mtls.uriSanIndex",
                "http.auth.mtls.uriSanPattern",
                "http.port",
                "http.ratelimit",
                "http.ratelimit.methods",
                "http.ratelimit.methods[].method",
                "http.ratelimit.methods[].rate",
                "http.ratelimit.rate",
                "http.realm",
                "http.tls",
                "http.tls.cacert",
                "http.tls.cert",
                "http.tls.key",
                "http.workers",
                "log",
                "log.audit",
                "log.level",
                "log.output",
                "storage",
                "storage.cacheDriver",
                "storage.commit",
                "storage.dedupe",
                "storage.gc",
                "storage.gcDelay",
                "storage.gcInterval",
                "storage.gcTimeWindow",
                "storage.redirectBlobURL",
                "storage.remoteCache",
                "storage.retention",
                "storage.retention.delay",
                "storage.retention.dryRun",
                "storage.retention.policies",
                "storage.retention.policies[].deleteReferrers",
                "storage.retention.policies[].deleteUntagged",
                "storage.retention.policies[].keepTags",
                "storage.retention.policies[].keepTags[].mostRecentlyPulledCount",
                "storage.retention.policies[].keepTags[].mostRecentlyPushedCount",
                "storage.retention.policies[].keepTags[].patterns",
                "storage.retention.policies[].keepTags[].pulledWithin",
                "storage.retention.policies[].keepTags[].pushedWithin",
                "storage.retention.policies[].repositories",
                "storage.rootDirectory",
                "storage.storageDriver",
                "storage.subPaths",
                "storage.subPaths.*.commit",
                "storage.subPaths.*.dedupe",
                "storage.subPaths.*.gc",
                "storage.subPaths.*.gcDelay",
                "storage.subPaths.*.gcInterval",
                "storage.subPaths.*.gcTimeWindow",
                "storage.subPaths.*.retention",
                "storage.subPaths.*.retention.delay",
                "storage.subPaths.*.retention.dryRun",
                "storage.subPaths.*.retention.policies",
                "storage.subPaths.*.retention.policies[].deleteReferrers",
                "storage.subPaths.*.retention.policies[].deleteUntagged",
                "storage.subPaths.*.retention.policies[].keepTags",
                "storage.subPaths.*.retention.policies[].keepTags[].mostRecentlyPulledCount",
                "storage.subPaths.*.retention.policies[].keepTags[].mostRecentlyPushedCount",
                "storage.subPaths.*.retention.policies[].keepTags[].patterns",
                "storage.subPaths.*.retention.policies[].keepTags[].pulledWithin",
                "storage.subPaths.*.retention.policies[].keepTags[].pushedWithin",
                "storage.subPaths.*.retention.policies[].repositories",
                "storage.subPaths.*.rootDirectory",
            ],
        )

    def test_refused(self):
        """
        Policy C{conditions}, the bearer extras and the authentication
        methods not implemented yet (openid, API keys, sessions), and nothing
        else, are refused.
        """
        statuses = keyStatuses()
        refused = {key for key, status in statuses.items() if status == REFUSED}
        self.assertIn("http.auth.bearer.oidc", refused)
        self.assertIn("http.accessControl.adminPolicy.conditions", refused)
        self.assertIn(
            "http.accessControl.repositories.*.policies[].conditions[].expression", refused
        )
        for implemented in [
            "http.auth.ldap.baseDN",
            "http.auth.htpasswd.path",
            "http.tls.cacert",
            "http.auth.bearer.cert",
            "http.accessControl.repositories.*.policies[].users",
        ]:
            self.assertNotIn(implemented, refused)
        self.assertEqual(
            {key.split(".")[1] for key in refused}, {"auth", "accessControl"}
        )
        self.assertEqual(
            {key.split(".")[2] for key in refused if key.startswith("http.auth.")},
            {"bearer", "openid", "apikey", "sessionKeysFile", "sessionDriver", "secureSession"},
        )
        self.assertEqual(
            {key for key in refused if key.startswith("http.accessControl.")},
            {
                key
                for key in statuses
                if key.startswith("http.accessControl.") and ".conditions" in key
            },
        )
        self.assertTrue(all(key.startswith("http.") for key in refused))

    def test_accepted(self):
        """
        Only the HTTP timeouts are accepted silently.
        """
        accepted = sorted(
            key for key, status in keyStatuses().items() if status == ACCEPTED
        )
        self.assertEqual(accepted, ["http.readTimeout", "http.writeTimeout"])

    def test_everythingElseWarns(self):
        """
        Every other key zot knows is declared as not implemented.
        """
        statuses = keyStatuses()
        self.assertEqual(
            set(statuses.values()), {IMPLEMENTED, NOT_IMPLEMENTED, REFUSED, ACCEPTED}
        )
        for key in [
            "storage.subPaths.*.storageDriver",
            "storage.subPaths.*.cacheDriver",
            "storage.subPaths.*.maxRepos",
            "storage.retention.policies[].keepUntagged",
            "http.externalUrl",
            "extensions.lint.enable",
            "scheduler.numWorkers",
            "cluster.hashKey",
        ]:
            self.assertEqual(statuses[key], NOT_IMPLEMENTED, key)
