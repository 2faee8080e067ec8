"""
Tests for L{zotwist.auth.authorizer}: access control over real HTTP.

The heart of this module is an access-control matrix: every action (read,
create, update, delete) tried by every kind of caller (anonymous, a user
named in a policy, a member of a configured group, a member of a group
reported by the authenticator as LDAP would, a user only the default
policy covers, an admin) against repositories decided by the patterns
C{**}, C{team/*}, C{team/app} and C{other/**}.  The expected rights are
written out by hand in L{EXPECTED}, not derived from the policy code.

Callers are told apart by L{tests.accesshelpers.HeaderAuthenticator}, a
TEST-ONLY authenticator that trusts an C{X-Test-User} header: the real
htpasswd, LDAP and certificate checkers are built separately, and an
end-to-end run with them is added once they are merged.
"""

import json

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.accesshelpers import HeaderAuthenticator, loadPolicy, startSite
from tests.apihelpers import (
    OCTET,
    assertError,
    digestOf,
    header,
    jsonBody,
    makeImage,
    pushBlob,
    pushImage,
    putManifest,
    resolve,
    startUpload,
    status,
    withQuery,
)
from zotwist.auth.authorizer import RegistryAuthorizer, isDockerClient
from zotwist.auth.interfaces import ANONYMOUS, IAuthorizer, Identity
from zotwist.errors import RegistryError

ALL = ["read", "create", "update", "delete"]

#: The policies of the matrix.
ACCESS_CONTROL = {
    "groups": {"devs": {"users": ["gina"]}},
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
    "adminPolicy": {"users": ["root"], "actions": ALL},
}

#: The callers: label -> (user, groups the authenticator reports).
CALLERS = {
    "anonymous": (None, None),
    "lucy (listed user)": ("lucy", None),
    "gina (config group)": ("gina", None),
    "lena (LDAP group)": ("lena", ["devs"]),
    "dave (default policy)": ("dave", None),
    "root (admin)": ("root", None),
}

#: What each caller may do in each repository, by hand: R, C, U, D.
EXPECTED = {
    "misc/thing": {  # decided by "**"
        "anonymous": "R",
        "lucy (listed user)": "RCUD",
        "gina (config group)": "R",
        "lena (LDAP group)": "R",
        "dave (default policy)": "R",
        "root (admin)": "RCUD",
    },
    "team/web": {  # decided by "team/*"
        "anonymous": "",
        "lucy (listed user)": "R",
        "gina (config group)": "RC",
        "lena (LDAP group)": "RC",
        "dave (default policy)": "R",
        "root (admin)": "RCUD",
    },
    "team/app": {  # decided by "team/app"
        "anonymous": "",
        "lucy (listed user)": "RCUD",
        "gina (config group)": "RCU",
        "lena (LDAP group)": "RCU",
        "dave (default policy)": "",
        "root (admin)": "RCUD",
    },
    "other/x/y": {  # decided by "other/**"
        "anonymous": "",
        "lucy (listed user)": "",
        "gina (config group)": "R",
        "lena (LDAP group)": "R",
        "dave (default policy)": "",
        "root (admin)": "RCUD",
    },
}


def slug(label: str) -> str:
    """
    A tag-safe form of a caller label (C{"lucy (listed user)"} -> C{lucy}).
    """
    return label.split()[0]


class MatrixTests(TestCase):
    """
    Every action by every kind of caller against every kind of pattern,
    with exact statuses.
    """

    async def setUp(self):
        policy = loadPolicy(ACCESS_CONTROL)
        self.site = await startSite(
            self, HeaderAuthenticator(), lambda store: RegistryAuthorizer(policy, store)
        )
        self.admin = self.site.as_("root")

    def caller(self, label: str):
        user, groups = CALLERS[label]
        return self.site.as_(user, groups)

    async def seed(self, repo: str) -> dict:
        """
        As the admin, give C{repo} what each caller's cells act on: image A
        under C{v1-<caller>}, image B under C{alt}, and an image of its own
        under C{del-<caller>} for each caller.
        """
        a = await pushImage(self.admin, repo, "v1-" + slug("anonymous"), f"A {repo}")
        for label in CALLERS:
            resp = await putManifest(self.admin, repo, "v1-" + slug(label), a.manifest,
                                     a.mediaType)
            self.assertEqual(resp.code, 201)
        b = await pushImage(self.admin, repo, "alt", f"B {repo}")
        own = {}
        for label in CALLERS:
            own[label] = await pushImage(self.admin, repo, "del-" + slug(label),
                                         f"D {repo} {label}")
        return {"a": a, "b": b, "own": own}

    def denial(self, label: str) -> int:
        return 401 if CALLERS[label][0] is None else 403

    async def cell(self, repo: str, label: str, seeded: dict) -> dict:
        """
        Try the four actions as C{label} in C{repo}.

        @return: action letter -> list of C{(what, status)} observed.
        """
        reg = self.caller(label)
        base = f"{reg.url}/v2/{repo}"
        me = slug(label)
        a, b = seeded["a"], seeded["b"]
        seen = {}

        seen["R"] = [
            ("GET manifest", await status(reg, "GET", f"{base}/manifests/v1-{me}")),
            ("HEAD manifest", await status(reg, "HEAD", f"{base}/manifests/v1-{me}")),
            ("GET blob", await status(reg, "GET", f"{base}/blobs/{digestOf(a.config)}")),
            ("HEAD blob", await status(reg, "HEAD", f"{base}/blobs/{digestOf(a.config)}")),
            ("GET tags", await status(reg, "GET", f"{base}/tags/list")),
            ("GET referrers", await status(reg, "GET", f"{base}/referrers/{a.digest}")),
        ]

        created = []
        new = makeImage(f"N {repo} {label}")
        resp = await reg.client.post(f"{base}/blobs/uploads/", data=b"")
        created.append(("POST upload", resp.code))
        location = resolve(reg, header(resp, "Location") or "/v2/none")
        if resp.code != 202:
            # Act on a session someone allowed opened, so the later steps
            # of an upload are checked too.
            location = await startUpload(self.admin, repo)
        created.append(("PATCH upload", await status(
            reg, "PATCH", location, data=new.config, headers=OCTET)))
        created.append(("GET upload", await status(reg, "GET", location)))
        created.append(("PUT upload", await status(
            reg, "PUT", withQuery(location, [("digest", digestOf(new.config))]),
            data=b"", headers=OCTET)))
        created.append(("POST monolithic", await status(
            reg, "POST",
            withQuery(f"{base}/blobs/uploads/", [("digest", digestOf(new.layers[0]))]),
            data=new.layers[0], headers=OCTET)))
        resp = await putManifest(reg, repo, f"new-{me}", new.manifest, new.mediaType)
        await resp.text()
        created.append(("PUT manifest new tag", resp.code))
        second = await startUpload(self.admin, repo)
        created.append(("DELETE upload", await status(reg, "DELETE", second)))
        seen["C"] = created

        resp = await putManifest(reg, repo, f"v1-{me}", b.manifest, b.mediaType)
        await resp.text()
        seen["U"] = [("PUT manifest over existing tag", resp.code)]

        d = seeded["own"][label]
        seen["D"] = [
            ("DELETE manifest", await status(reg, "DELETE", f"{base}/manifests/del-{me}")),
            ("DELETE blob", await status(
                reg, "DELETE", f"{base}/blobs/{digestOf(d.layers[0])}")),
        ]
        return seen

    def expectedStatuses(self, letter: str, allowed: bool, label: str, what: str) -> set:
        if not allowed:
            return {self.denial(label)}
        return {
            "GET manifest": {200}, "HEAD manifest": {200}, "GET blob": {200},
            "HEAD blob": {200}, "GET tags": {200}, "GET referrers": {200},
            "POST upload": {202}, "PATCH upload": {202}, "GET upload": {204},
            "PUT upload": {201}, "POST monolithic": {201},
            "PUT manifest new tag": {201}, "DELETE upload": {204},
            "PUT manifest over existing tag": {201},
            "DELETE manifest": {202}, "DELETE blob": {202},
        }[what]

    async def checkRepository(self, repo: str) -> None:
        """
        Run every caller's cell in C{repo}; fail with the full list of
        mismatches.
        """
        seeded = await self.seed(repo)
        problems = []
        for label in CALLERS:
            seen = await self.cell(repo, label, seeded)
            for letter, results in seen.items():
                allowed = letter in EXPECTED[repo][label]
                for what, code in results:
                    if code not in self.expectedStatuses(letter, allowed, label, what):
                        problems.append(
                            f"{repo} {label} {letter} {what}: got {code}, "
                            f"expected {'allowed' if allowed else 'denied'}"
                        )
        if problems:
            self.fail("\n".join(problems))

    async def test_doubleStar(self):
        """
        C{misc/thing}, decided by C{**}: anonymous and default read, lucy
        everything, the admin everything.
        """
        await self.checkRepository("misc/thing")

    async def test_oneLevel(self):
        """
        C{team/web}, decided by C{team/*}: the group may push but not
        overwrite, lucy loses what C{**} gave her, anonymous gets nothing.
        """
        await self.checkRepository("team/web")

    async def test_exact(self):
        """
        C{team/app}, decided by its exact name: no default policy, so dave
        gets nothing; the group may overwrite but not delete.
        """
        await self.checkRepository("team/app")

    async def test_subtree(self):
        """
        C{other/x/y}, decided by C{other/**}: the group reads, only the
        admin writes.
        """
        await self.checkRepository("other/x/y")

    async def test_catalog(self):
        """
        C{/v2/_catalog} lists only the repositories each caller may read.
        """
        for repo in EXPECTED:
            await pushImage(self.admin, repo, "v1", f"catalog {repo}")
        for label in CALLERS:
            resp = await self.caller(label).client.get(f"{self.site.url}/v2/_catalog")
            self.assertEqual(resp.code, 200, label)
            listed = (await jsonBody(resp))["repositories"]
            readable = sorted(r for r in EXPECTED if "R" in EXPECTED[r][label])
            self.assertEqual(listed, readable, label)

    async def test_catalogPaginatesFiltered(self):
        """
        Pagination counts only what the caller sees.
        """
        for repo in ["a/one", "other/hidden", "b/two", "c/three"]:
            await pushImage(self.admin, repo, "v1", repo)
        anonymous = self.site.as_(None)
        resp = await anonymous.client.get(f"{self.site.url}/v2/_catalog?n=2")
        self.assertEqual((await jsonBody(resp))["repositories"], ["a/one", "b/two"])
        self.assertIn("last=b%2Ftwo", header(resp, "Link"))
        resp = await anonymous.client.get(f"{self.site.url}/v2/_catalog?n=2&last=b%2Ftwo")
        self.assertEqual((await jsonBody(resp))["repositories"], ["c/three"])

    async def test_challenge(self):
        """
        A 401 carries the authenticator's challenge and the OCI error body;
        a 403 is C{DENIED}.
        """
        resp = await self.site.as_(None).client.get(
            f"{self.site.url}/v2/team/app/tags/list"
        )
        self.assertEqual(header(resp, "WWW-Authenticate"), 'Basic realm="zotwist-test"')
        await assertError(resp, 401, "UNAUTHORIZED")
        resp = await self.site.as_("dave").client.get(f"{self.site.url}/v2/team/app/tags/list")
        codes = await assertError(resp, 403, "DENIED")
        self.assertEqual(codes, ["DENIED"])

    async def test_failedLogin(self):
        """
        Wrong credentials are a 401 even where anonymous callers may read.
        """
        resp = await self.site.as_("!bad").client.get(f"{self.site.url}/v2/misc/tags/list")
        await assertError(resp, 401, "UNAUTHORIZED")

    async def test_repushSameManifestIsCreate(self):
        """
        Pushing the manifest a tag already names again is not an overwrite:
        gina (create, no update, in C{team/web}) may retry a push, but may
        not move the tag elsewhere, nor move it through C{?tag=}.
        """
        image = await pushImage(self.admin, "team/web", "v1", "same")
        other = await pushImage(self.admin, "team/web", "other", "other")
        gina = self.site.as_("gina")
        resp = await putManifest(gina, "team/web", "v1", image.manifest, image.mediaType)
        await resp.text()
        self.assertEqual(resp.code, 201)
        resp = await putManifest(gina, "team/web", "v1", other.manifest, other.mediaType)
        await assertError(resp, 403, "DENIED")
        resp = await putManifest(
            gina, "team/web", other.digest, other.manifest, other.mediaType,
            params=[("tag", "v1")],
        )
        await assertError(resp, 403, "DENIED")
        resp = await putManifest(
            gina, "team/web", other.digest, other.manifest, other.mediaType,
            params=[("tag", "brand-new")],
        )
        await resp.text()
        self.assertEqual(resp.code, 201)
        resp = await self.admin.client.get(f"{self.site.url}/v2/team/web/manifests/v1")
        self.assertEqual(header(resp, "Docker-Content-Digest"), image.digest)
        await resp.text()

    async def test_mount(self):
        """
        A cross-repository mount needs read on C{from}: from a repository
        the caller cannot read it is a plain new upload session (202) and
        nothing is mounted; from a readable one it mounts (201).
        """
        secret = await pushImage(self.admin, "other/x/y", "v1", "secret")
        shared = await pushImage(self.admin, "team/app", "v1", "shared")
        lucy = self.site.as_("lucy")
        digest = digestOf(secret.layers[0])
        url = withQuery(f"{lucy.url}/v2/misc/thing/blobs/uploads/",
                        [("mount", digest), ("from", "other/x/y")])
        resp = await lucy.client.post(url, data=b"")
        await resp.text()
        self.assertEqual(resp.code, 202)
        self.assertIn("/blobs/uploads/", header(resp, "Location"))
        # Without "from" the registry may look anywhere the caller can read.
        resp = await lucy.client.post(
            withQuery(f"{lucy.url}/v2/misc/thing/blobs/uploads/", [("mount", digest)]),
            data=b"",
        )
        await resp.text()
        self.assertEqual(resp.code, 202)
        resp = await self.admin.client.head(f"{lucy.url}/v2/misc/thing/blobs/{digest}")
        self.assertEqual(resp.code, 404)

        readable = digestOf(shared.layers[0])
        url = withQuery(f"{lucy.url}/v2/misc/thing/blobs/uploads/",
                        [("mount", readable), ("from", "team/app")])
        resp = await lucy.client.post(url, data=b"")
        await resp.text()
        self.assertEqual(resp.code, 201)
        self.assertEqual(header(resp, "Docker-Content-Digest"), readable)

    async def test_unmatchedRepository(self):
        """
        Where no pattern matches, only admins may do anything.
        """
        policy = loadPolicy({
            "repositories": {"team/**": {"defaultPolicy": ALL, "anonymousPolicy": ["read"]}},
            "adminPolicy": {"users": ["root"], "actions": ALL},
        })
        site = await startSite(
            self, HeaderAuthenticator(), lambda store: RegistryAuthorizer(policy, store)
        )
        await pushImage(site.as_("root"), "elsewhere/app", "v1", "elsewhere")
        await pushBlob(site.as_("dave"), "team/a", b"team blob")
        for user, code in [(None, 401), ("dave", 403)]:
            reg = site.as_(user)
            self.assertEqual(
                await status(reg, "GET", f"{site.url}/v2/elsewhere/app/manifests/v1"), code
            )
            self.assertEqual(
                await status(reg, "POST", f"{site.url}/v2/elsewhere/app/blobs/uploads/",
                             data=b""), code
            )


class BaseAndDockerTests(TestCase):
    """
    C{GET /v2/}: who is let in, and Docker's need for a 401 there.
    """

    DOCKER = "docker/27.3.1 go/go1.22.7 git-commit/41ca978 kernel/6.1 os/linux arch/amd64 " \
             "UpstreamClient(Docker-Client/27.3.1 \\(linux\\))"

    async def site(self, accessControl: dict):
        policy = loadPolicy(accessControl)
        return await startSite(
            self, HeaderAuthenticator(), lambda store: RegistryAuthorizer(policy, store)
        )

    async def base(self, site, user=None, agent="skopeo/1.13") -> int:
        reg = site.as_(user)
        return await status(reg, "GET", f"{site.url}/v2/", headers={"User-Agent": [agent]})

    async def test_mixedPolicies(self):
        """
        Anonymous and authenticated-only policies together: anonymous
        callers get 200, except Docker, which gets 401 so that it sends its
        stored credentials; logged-in callers always get 200.
        """
        site = await self.site(ACCESS_CONTROL)
        self.assertEqual(await self.base(site), 200)
        self.assertEqual(await self.base(site, agent=self.DOCKER), 401)
        self.assertEqual(await self.base(site, agent="docker/27.3.1 UpstreamClient(compose)"),
                         401)
        self.assertEqual(await self.base(site, "dave", agent=self.DOCKER), 200)
        # Anonymous Docker still pulls what anonymous callers may read.
        await pushImage(site.as_("root"), "misc/thing", "v1", "open")
        reg = site.as_(None)
        self.assertEqual(
            await status(reg, "GET", f"{site.url}/v2/misc/thing/manifests/v1",
                         headers={"User-Agent": [self.DOCKER]}),
            200,
        )

    async def test_anonymousOnly(self):
        """
        With anonymous policies alone there is nothing to log in for:
        Docker gets 200 too.
        """
        site = await self.site({"repositories": {"**": {"anonymousPolicy": ["read"]}}})
        self.assertEqual(await self.base(site, agent=self.DOCKER), 200)

    async def test_noAnonymousPolicy(self):
        """
        Without any anonymous policy, anonymous callers get 401 on C{/v2/}
        and on the catalog; anyone logged in gets 200.
        """
        site = await self.site({"repositories": {"**": {"defaultPolicy": ["read"]}}})
        self.assertEqual(await self.base(site), 401)
        self.assertEqual(await self.base(site, "dave"), 200)
        reg = site.as_(None)
        self.assertEqual(await status(reg, "GET", f"{site.url}/v2/_catalog"), 401)

    async def test_withoutPolicies(self):
        """
        Authentication without C{accessControl} (the authorizer bearer
        tokens bring): logged-in callers may do everything, anonymous ones
        nothing.
        """
        site = await startSite(
            self, HeaderAuthenticator(), lambda store: RegistryAuthorizer(None, store)
        )
        self.assertEqual(await self.base(site), 401)
        await pushImage(site.as_("anyone"), "free/app", "v1", "free")
        reg = site.as_(None)
        self.assertEqual(await status(reg, "GET", f"{site.url}/v2/free/app/manifests/v1"), 401)


class UnitTests(TestCase):
    """
    L{RegistryAuthorizer} and its helpers without HTTP.
    """

    def test_interface(self):
        """
        L{RegistryAuthorizer} provides L{IAuthorizer}.
        """
        self.assertTrue(verifyObject(IAuthorizer, RegistryAuthorizer()))

    def test_mayReadWithoutIdentity(self):
        """
        C{mayRead} treats a missing identity as anonymous.
        """
        authorizer = RegistryAuthorizer(loadPolicy(ACCESS_CONTROL))
        self.assertTrue(authorizer.mayRead(None, "misc/thing"))
        self.assertFalse(authorizer.mayRead(None, "team/app"))
        self.assertFalse(authorizer.mayRead(ANONYMOUS, "team/app"))
        self.assertTrue(authorizer.mayRead(Identity("gina"), "team/app"))

    def test_dockerClient(self):
        """
        Docker is recognised as zot recognises it.
        """
        class Request:
            def __init__(self, agent):
                self.agent = agent

            def getHeader(self, name):
                return self.agent

        self.assertTrue(isDockerClient(Request("Docker-Client/19.03.12 (linux)")))
        self.assertTrue(isDockerClient(Request("docker/27.0 go/go1.21")))
        self.assertFalse(isDockerClient(Request("skopeo/1.13")))
        self.assertFalse(isDockerClient(Request(None)))

    async def test_manifestPutWithoutStore(self):
        """
        Without a store to look tags up in, every manifest PUT is a create.
        """
        from zotwist.web.routes import matchRoute

        policy = loadPolicy(
            {"repositories": {"**": {"policies": [{"users": ["c"], "actions": ["create"]}]}}}
        )
        authorizer = RegistryAuthorizer(policy)
        route = matchRoute(b"/v2/a/manifests/v1")
        await authorizer.authorize(Identity("c"), route, "PUT", object())
        with self.assertRaises(RegistryError) as caught:
            await authorizer.authorize(Identity("c"), route, "DELETE", object())
        self.assertEqual(caught.exception.code, "DENIED")
        self.assertEqual(
            json.loads(caught.exception.body())["errors"][0]["detail"],
            {"repository": "a", "action": "delete"},
        )
