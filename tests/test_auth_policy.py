"""
Tests for L{zotwist.auth.policy}: zot's access-control rules as a table,
without HTTP, and the config checks that go with them.
"""

from twisted.trial.unittest import SynchronousTestCase

from zotwist.auth.policy import (
    CREATE,
    DELETE,
    READ,
    UPDATE,
    AccessPolicy,
    Caller,
    PatternError,
    compilePattern,
    globMatch,
)
from zotwist.config import ConfigError, parseConfig

#: Bearer settings that make a config "authenticated" without reading files.
BEARER = {"realm": "https://auth.example/token", "service": "zot", "cert": "/tokens.crt"}


def document(accessControl: dict, auth: dict | None = None) -> dict:
    """
    A minimal zot config carrying C{accessControl}, with bearer tokens as
    the authentication method unless C{auth} says otherwise.
    """
    http = {"address": "127.0.0.1", "port": "0", "accessControl": accessControl}
    if auth is None:
        auth = {"bearer": BEARER}
    if auth:
        http["auth"] = auth
    return {"storage": {"rootDirectory": "/var/lib/zot"}, "http": http}


def policyFrom(accessControl: dict) -> AccessPolicy:
    """
    Load C{accessControl} through the config loader and compile it.
    """
    return AccessPolicy(parseConfig(document(accessControl)).http.accessControl)


ALL = [READ, CREATE, UPDATE, DELETE]
ANONYMOUS = Caller(None)


class GlobTests(SynchronousTestCase):
    """
    L{globMatch} follows doublestar, the matcher zot uses.
    """

    def test_table(self):
        """
        C{*} stays within one level, C{**} spans any number (including
        none), and exact names match only themselves.
        """
        for pattern, name, expected in [
            ("**", "a", True),
            ("**", "a/b/c", True),
            ("team/*", "team/app", True),
            ("team/*", "team/a/b", False),
            ("team/*", "team", False),
            ("team/**", "team", True),
            ("team/**", "team/a/b", True),
            ("team/**", "teamwork/a", False),
            ("**/app", "app", True),
            ("**/app", "x/y/app", True),
            ("**/app", "xapp", False),
            ("a/**/b", "a/b", True),
            ("a/**/b", "a/x/y/b", True),
            ("a/**/b", "a/xb", False),
            ("team/app", "team/app", True),
            ("team/app", "team/app2", False),
            ("team/app", "team/app/sub", False),
            ("app?", "app1", True),
            ("app?", "app/", False),
            ("[ab]x", "bx", True),
            ("[!ab]x", "bx", False),
            ("[!ab]x", "cx", True),
            ("{dev,prod}/*", "prod/api", True),
            ("{dev,prod}/*", "test/api", False),
            ("a.b", "axb", False),
            ("a\\*", "a*", True),
            ("a\\*", "ab", False),
        ]:
            self.assertEqual(
                globMatch(pattern, name), expected, f"{pattern!r} vs {name!r}"
            )

    def test_malformed(self):
        """
        An unclosed class or alternative is an error, not a pattern that
        quietly matches nothing.
        """
        for pattern in ["team/[ab", "{dev,prod/*", "trailing\\"]:
            self.assertRaises(PatternError, compilePattern, pattern)

    def test_badGlobInConfig(self):
        """
        The loader refuses a malformed repository glob, naming it.
        """
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            document({"repositories": {"team/[ab": {"anonymousPolicy": ["read"]}}}),
        )
        self.assertIn('http.accessControl.repositories["team/[ab"]', str(error))
        self.assertIn("not a valid repository glob", str(error))


class PolicyTests(SynchronousTestCase):
    """
    L{AccessPolicy.can}: which pattern decides, and who it grants what.
    """

    def setUp(self):
        self.policy = policyFrom(
            {
                "groups": {"devs": {"users": ["gina"]}, "ops": {"users": ["otto"]}},
                "repositories": {
                    "**": {
                        "policies": [{"users": ["lucy"], "actions": ALL}],
                        "defaultPolicy": ["read"],
                        "anonymousPolicy": ["read"],
                    },
                    "team/*": {
                        "policies": [{"groups": ["devs"], "actions": ["read", "create"]}],
                        "defaultPolicy": ["read"],
                    },
                    "team/app": {
                        "policies": [
                            {"users": ["lucy"], "actions": ALL},
                            {"groups": ["devs"], "actions": ["read", "create", "update"]},
                        ],
                    },
                    "other/**": {"policies": [{"groups": ["devs"], "actions": ["read"]}]},
                },
                "adminPolicy": {"users": ["root"], "groups": ["ops"], "actions": ALL},
            }
        )

    def allowed(self, caller, repository) -> set:
        return {a for a in ALL if self.policy.can(caller, a, repository)}

    def test_longestPatternDecides(self):
        """
        Only the longest matching pattern counts: C{team/app} takes away the
        C{read} that C{**} gives anonymous callers, and C{team/*} the
        rights C{**} gives lucy.
        """
        self.assertEqual(self.policy.decidingPattern("misc"), "**")
        self.assertEqual(self.policy.decidingPattern("team/web"), "team/*")
        self.assertEqual(self.policy.decidingPattern("team/app"), "team/app")
        self.assertEqual(self.policy.decidingPattern("other/a/b"), "other/**")
        self.assertEqual(self.allowed(ANONYMOUS, "misc"), {READ})
        self.assertEqual(self.allowed(ANONYMOUS, "team/app"), set())
        self.assertEqual(self.allowed(Caller("lucy"), "misc"), set(ALL))
        self.assertEqual(self.allowed(Caller("lucy"), "team/web"), {READ})
        self.assertEqual(self.allowed(Caller("lucy"), "team/app"), set(ALL))

    def test_groups(self):
        """
        Group entries apply to the config's members and to callers whose
        authenticator (LDAP) reported the group.
        """
        for caller in [Caller("gina"), Caller("lena", frozenset({"devs"}))]:
            self.assertEqual(self.allowed(caller, "team/web"), {READ, CREATE})
            self.assertEqual(self.allowed(caller, "team/app"), {READ, CREATE, UPDATE})
            self.assertEqual(self.allowed(caller, "other/x"), {READ})
        self.assertEqual(
            self.policy.groupsOf(Caller("gina", frozenset({"ldap"}))),
            frozenset({"devs", "ldap"}),
        )

    def test_defaultPolicy(self):
        """
        C{defaultPolicy} is for any authenticated caller, never anonymous
        ones; where a pattern has none, unlisted users get nothing.
        """
        dave = Caller("dave")
        self.assertEqual(self.allowed(dave, "misc"), {READ})
        self.assertEqual(self.allowed(dave, "team/web"), {READ})
        self.assertEqual(self.allowed(dave, "team/app"), set())
        self.assertEqual(self.allowed(ANONYMOUS, "team/web"), set())

    def test_anonymousPolicy(self):
        """
        C{anonymousPolicy} is for anonymous callers only: an authenticated
        user does not inherit it.
        """
        policy = policyFrom(
            {"repositories": {"**": {"anonymousPolicy": ["read", "create"],
                                     "defaultPolicy": ["read"]}}}
        )
        self.assertTrue(policy.can(ANONYMOUS, CREATE, "a"))
        self.assertFalse(policy.can(Caller("dave"), CREATE, "a"))

    def test_admin(self):
        """
        C{adminPolicy} users and groups get its actions on every repository,
        even where their pattern gives them nothing.
        """
        for caller in [Caller("root"), Caller("otto"), Caller("x", frozenset({"ops"}))]:
            for repository in ["misc", "team/web", "team/app", "other/x/y"]:
                self.assertEqual(self.allowed(caller, repository), set(ALL))
        self.assertTrue(self.policy.isAdmin(Caller("otto")))
        self.assertFalse(self.policy.isAdmin(Caller("lucy")))
        self.assertFalse(self.policy.isAdmin(ANONYMOUS))

    def test_adminActionsLimit(self):
        """
        Admins get only the actions C{adminPolicy} lists.
        """
        policy = policyFrom(
            {"repositories": {"a/*": {"policies": []}},
             "adminPolicy": {"users": ["root"], "actions": ["read"]}}
        )
        self.assertEqual(
            {a for a in ALL if policy.can(Caller("root"), a, "a/b")}, {READ}
        )

    def test_unmatchedRepository(self):
        """
        A repository no pattern matches allows nothing, except to admins.
        """
        policy = policyFrom(
            {"repositories": {"team/**": {"defaultPolicy": ALL, "anonymousPolicy": ALL}},
             "adminPolicy": {"users": ["root"], "actions": ALL}}
        )
        self.assertIsNone(policy.decidingPattern("elsewhere/app"))
        for caller in [ANONYMOUS, Caller("dave")]:
            self.assertEqual({a for a in ALL if policy.can(caller, a, "elsewhere/app")}, set())
        self.assertTrue(policy.can(Caller("root"), DELETE, "elsewhere/app"))

    def test_tiesAreStable(self):
        """
        Patterns of equal length both matching: the one with fewer
        wildcards decides, every time (zot's pick is random).
        """
        policy = policyFrom(
            {"repositories": {
                "ab/*": {"defaultPolicy": ["read"]},
                "ab/c": {"defaultPolicy": ["read", "create"]},
            }}
        )
        self.assertEqual(policy.decidingPattern("ab/c"), "ab/c")
        self.assertTrue(policy.can(Caller("dave"), CREATE, "ab/c"))

    def test_userEntryWithoutActionFallsToDefault(self):
        """
        A listed user lacking an action still gets it from
        C{defaultPolicy}: zot's entries only add rights.
        """
        policy = policyFrom(
            {"repositories": {"**": {
                "policies": [{"users": ["lucy"], "actions": ["create"]}],
                "defaultPolicy": ["read"],
            }}}
        )
        self.assertEqual(
            {a for a in ALL if policy.can(Caller("lucy"), a, "x")}, {READ, CREATE}
        )


class PolicyKindsTests(SynchronousTestCase):
    """
    What the policy says about itself: anonymous-only and mixed configs,
    and the metrics rule.
    """

    def test_onlyAnonymous(self):
        """
        A config granting only to anonymous callers is "anonymous only",
        and not mixed; adding a default, user, group or admin entry makes
        it mixed.
        """
        anonymous = {"repositories": {"**": {"anonymousPolicy": ["read"]}}}
        policy = policyFrom(anonymous)
        self.assertTrue(policy.containsOnlyAnonymousPolicy())
        self.assertFalse(policy.hasMixedPolicies())
        for extra in [
            {"repositories": {"**": {"anonymousPolicy": ["read"], "defaultPolicy": ["read"]}}},
            {"repositories": {"**": {"anonymousPolicy": ["read"],
                                     "policies": [{"users": ["a"], "actions": ["read"]}]}}},
            {"repositories": {"**": {"anonymousPolicy": ["read"],
                                     "policies": [{"groups": ["g"], "actions": ["read"]}]}}},
            {**anonymous, "adminPolicy": {"users": ["root"], "actions": ["read"]}},
        ]:
            policy = policyFrom(extra)
            self.assertFalse(policy.containsOnlyAnonymousPolicy(), extra)
            self.assertTrue(policy.hasMixedPolicies(), extra)

    def test_noAnonymous(self):
        """
        Without any anonymous policy, nothing is anonymous-only or mixed.
        """
        policy = policyFrom({"repositories": {"**": {"defaultPolicy": ["read"]}}})
        self.assertFalse(policy.anonymousPolicyExists())
        self.assertFalse(policy.containsOnlyAnonymousPolicy())
        self.assertFalse(policy.hasMixedPolicies())

    def test_metrics(self):
        """
        C{metrics}: listed users, and anonymous callers when its
        C{anonymousPolicy} has C{read}.
        """
        policy = policyFrom(
            {"repositories": {}, "metrics": {"users": ["prom"], "anonymousPolicy": ["read"]}}
        )
        self.assertTrue(policy.mayReadMetrics(Caller("prom")))
        self.assertFalse(policy.mayReadMetrics(Caller("dave")))
        self.assertTrue(policy.mayReadMetrics(ANONYMOUS))
        closed = policyFrom({"repositories": {}, "metrics": {"users": ["prom"]}})
        self.assertFalse(closed.mayReadMetrics(ANONYMOUS))


class VerifyRuleTests(SynchronousTestCase):
    """
    zot's C{verify} rule: access control needs authentication unless it
    only has anonymous policies; and bearer settings must be complete.
    """

    def test_anonymousOnlyWithoutAuthentication(self):
        """
        Anonymous-only policies load without any authentication method.
        """
        config = parseConfig(
            document({"repositories": {"**": {"anonymousPolicy": ["read"]}}}, auth={})
        )
        self.assertEqual(
            config.http.accessControl.repositories["**"].anonymousPolicy, ("read",)
        )
        self.assertEqual(config.warnings, ())

    def test_policiesNeedAuthentication(self):
        """
        Any default, user or admin policy without authentication is
        refused, with one line naming the key.
        """
        for accessControl in [
            {"repositories": {"**": {"defaultPolicy": ["read"]}}},
            {"repositories": {"**": {"policies": [{"users": ["a"], "actions": ["read"]}]}}},
            {"repositories": {}, "adminPolicy": {"users": ["root"], "actions": ["read"]}},
            {"repositories": {}},
        ]:
            error = self.assertRaises(
                ConfigError, parseConfig, document(accessControl, auth={})
            )
            self.assertTrue(
                str(error).startswith("<config>: http.accessControl: needs an authentication"),
                str(error),
            )

    def test_bearerIsAuthentication(self):
        """
        Bearer tokens count as authentication for the rule.
        """
        config = parseConfig(document({"repositories": {"**": {"defaultPolicy": ["read"]}}}))
        self.assertEqual(config.http.auth.bearer.service, "zot")

    def test_bearerIncomplete(self):
        """
        Bearer settings without realm, service or cert are refused (zot
        would quietly switch bearer authentication off).
        """
        for missing in ["realm", "service", "cert"]:
            bearer = {k: v for k, v in BEARER.items() if k != missing}
            error = self.assertRaises(
                ConfigError,
                parseConfig,
                document({"repositories": {}}, auth={"bearer": bearer}),
            )
            self.assertIn(f"http.auth.bearer.{missing}: required", str(error))

    def test_conditionsRefused(self):
        """
        CEL policy conditions are not implemented; ignoring one would grant
        what it meant to restrict, so the config is refused.
        """
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            document({"repositories": {"**": {"policies": [
                {"users": ["a"], "actions": ["read"],
                 "conditions": [{"expression": "req.tls.enabled"}]}
            ]}}}),
        )
        self.assertIn("policies[0].conditions: not implemented by zotwist yet", str(error))
        self.assertIn("without policy conditions", str(error))

    def test_otherTokenSourcesRefused(self):
        """
        Bearer token sources other than C{cert} are refused until built.
        """
        for key, value in [
            ("oidc", [{"issuer": "https://issuer.example"}]),
            ("awsSecretsManager", {"region": "eu", "secretName": "k"}),
            ("upstreamTokenEndpoint", {"realm": "https://up.example"}),
        ]:
            error = self.assertRaises(
                ConfigError,
                parseConfig,
                document({"repositories": {}}, auth={"bearer": {**BEARER, key: value}}),
            )
            self.assertIn(f"http.auth.bearer.{key}: not implemented", str(error))

    def test_metricsWarns(self):
        """
        C{accessControl.metrics} loads with a warning: there is no metrics
        endpoint to protect yet.
        """
        config = parseConfig(
            document({"repositories": {}, "metrics": {"users": ["prom"]}})
        )
        self.assertEqual(
            config.warnings,
            ("http.accessControl.metrics: not implemented by zotwist yet; ignored",),
        )
