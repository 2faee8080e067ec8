"""
Tests for L{zotwist.web.routes} (matching /v2 paths) and for the
pagination helper of L{zotwist.web.api}.
"""

from twisted.trial.unittest import SynchronousTestCase

from zotwist.errors import RegistryError
from zotwist.web.api import _paginate
from zotwist.web.routes import METHODS, Route, matchRoute

DIGEST = "sha256:" + "0123456789abcdef" * 4
UPLOAD = "0123456789abcdef0123456789abcdef"


class MatchRouteTests(SynchronousTestCase):
    """
    L{matchRoute} finds the endpoint and its parameters.
    """

    def assertRoute(self, path: bytes, routeName: str, **params):
        """
        Assert that C{path} matches the route C{routeName} with C{params}.
        """
        self.assertEqual(matchRoute(path), Route(routeName, params), path)

    def test_base(self):
        """
        C{/v2/} and C{/v2} are the base endpoint.
        """
        self.assertRoute(b"/v2/", "base")
        self.assertRoute(b"/v2", "base")

    def test_catalog(self):
        """
        C{/v2/_catalog}.
        """
        self.assertRoute(b"/v2/_catalog", "catalog")

    def test_tags(self):
        """
        C{/v2/<name>/tags/list}, with one or several name components.
        """
        self.assertRoute(b"/v2/a/tags/list", "tags", name="a")
        self.assertRoute(b"/v2/a/b/c/tags/list", "tags", name="a/b/c")

    def test_manifest(self):
        """
        C{/v2/<name>/manifests/<reference>} by tag or by digest.
        """
        self.assertRoute(b"/v2/a/manifests/latest", "manifest", name="a", reference="latest")
        self.assertRoute(
            b"/v2/a/b/manifests/" + DIGEST.encode(), "manifest", name="a/b", reference=DIGEST
        )

    def test_uploads(self):
        """
        C{/v2/<name>/blobs/uploads/}, with or without the trailing slash.
        """
        self.assertRoute(b"/v2/a/b/blobs/uploads/", "uploads", name="a/b")
        self.assertRoute(b"/v2/a/b/blobs/uploads", "uploads", name="a/b")

    def test_upload(self):
        """
        C{/v2/<name>/blobs/uploads/<id>}.
        """
        self.assertRoute(
            b"/v2/a/b/c/blobs/uploads/" + UPLOAD.encode(), "upload", name="a/b/c", uploadID=UPLOAD
        )

    def test_blob(self):
        """
        C{/v2/<name>/blobs/<digest>}.
        """
        self.assertRoute(b"/v2/a/b/blobs/" + DIGEST.encode(), "blob", name="a/b", digest=DIGEST)

    def test_referrers(self):
        """
        C{/v2/<name>/referrers/<digest>}.
        """
        self.assertRoute(
            b"/v2/a/b/referrers/" + DIGEST.encode(), "referrers", name="a/b", digest=DIGEST
        )

    def test_everyRouteReachable(self):
        """
        Each route of L{METHODS} is matched by some path.
        """
        paths = [
            b"/v2/", b"/v2/_catalog", b"/v2/x/tags/list", b"/v2/x/manifests/t",
            b"/v2/x/blobs/uploads/", b"/v2/x/blobs/uploads/u", b"/v2/x/blobs/d",
            b"/v2/x/referrers/d",
        ]
        self.assertEqual({matchRoute(p).name for p in paths}, set(METHODS))

    def test_namesWithEndpointWords(self):
        """
        Names whose components look like endpoint words are matched from
        the right: the last segments decide the endpoint.
        """
        self.assertRoute(b"/v2/tags/list/tags/list", "tags", name="tags/list")
        self.assertRoute(
            b"/v2/a/manifests/b/manifests/c", "manifest", name="a/manifests/b", reference="c"
        )
        self.assertRoute(b"/v2/manifests/tags/list", "tags", name="manifests")
        self.assertRoute(b"/v2/_catalog/tags/list", "tags", name="_catalog")
        self.assertRoute(
            b"/v2/referrers/blobs/uploads/u", "upload", name="referrers", uploadID="u"
        )

    def test_rawNotDecoded(self):
        """
        Percent-encoded characters are kept as sent (they can then only
        fail validation).
        """
        self.assertRoute(b"/v2/a%2Fb/tags/list", "tags", name="a%2Fb")
        self.assertRoute(
            b"/v2/a/manifests/..%2F..%2Fx", "manifest", name="a", reference="..%2F..%2Fx"
        )

    def test_unknown(self):
        """
        Paths the API does not have are L{None}.
        """
        for path in [
            b"", b"/", b"/v1/", b"/v3/", b"/v2x", b"/v2/a", b"/v2/a/b", b"/v2//",
            b"/v2/_catalog/", b"/v2/a/tags", b"/v2/a/tags/list/", b"/v2/a/manifests/",
            b"/v2/a/manifests", b"/v2/a/manifests/a/b", b"/v2/a/blobs/", b"/v2/a/blobs",
            b"/v2/a/referrers/", b"/v2/a/unknown/x", b"/v2/tags/list",
            b"/v2/manifests/x", b"/v2/blobs/x", b"v2/a/tags/list", b"/x/v2/a/tags/list",
            b"/v2/a/blobs/uploads/u/x",
        ]:
            self.assertIsNone(matchRoute(path), path)

    def test_nonASCII(self):
        """
        A path that is not ASCII is L{None}, not an exception.
        """
        self.assertIsNone(matchRoute("/v2/\u00e4/tags/list".encode()))
        self.assertIsNone(matchRoute(b"/v2/a/manifests/\xff"))


class RouteMethodTests(SynchronousTestCase):
    """
    L{Route.allows} and L{Route.allowHeader}.
    """

    def test_allows(self):
        """
        Each route allows its methods, HEAD wherever GET is, and nothing
        else.
        """
        everything = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE"]
        expected = {
            "base": {"GET", "HEAD"},
            "catalog": {"GET", "HEAD"},
            "tags": {"GET", "HEAD"},
            "manifest": {"GET", "HEAD", "PUT", "DELETE"},
            "uploads": {"POST"},
            "upload": {"GET", "HEAD", "PATCH", "PUT", "DELETE"},
            "blob": {"GET", "HEAD", "DELETE"},
            "referrers": {"GET", "HEAD"},
        }
        self.assertEqual(set(expected), set(METHODS))
        for name, allowed in expected.items():
            route = Route(name, {})
            self.assertEqual({m for m in everything if route.allows(m)}, allowed, name)

    def test_methodsAreCaseSensitive(self):
        """
        Methods are compared as sent: C{get} is not C{GET}.
        """
        self.assertFalse(Route("base", {}).allows("get"))

    def test_allowHeader(self):
        """
        The C{Allow} header lists the methods, with HEAD after them when GET
        is one.
        """
        self.assertEqual(Route("manifest", {}).allowHeader(), "GET, PUT, DELETE, HEAD")
        self.assertEqual(Route("uploads", {}).allowHeader(), "POST")
        self.assertEqual(Route("blob", {}).allowHeader(), "GET, DELETE, HEAD")


class _ArgsRequest:
    """
    Just enough of a request for L{_paginate}: C{args} as Twisted parses it.
    """

    def __init__(self, **args: str):
        self.args = {k.encode(): [v.encode()] for k, v in args.items()}


class PaginateTests(SynchronousTestCase):
    """
    L{_paginate}: C{n} and C{last} on a sorted list, with the C{Link} header.
    """

    ITEMS = ("a", "b", "c", "d", "e")

    def test_noArguments(self):
        """
        Without C{n} or C{last} everything is returned, with no link.
        """
        self.assertEqual(_paginate(_ArgsRequest(), list(self.ITEMS), "/v2/_catalog", "x"),
                         (list(self.ITEMS), None))

    def test_firstPage(self):
        """
        C{n} limits the page and links to the next one after its last item.
        """
        page, link = _paginate(_ArgsRequest(n="2"), list(self.ITEMS), "/v2/_catalog", "x")
        self.assertEqual(page, ["a", "b"])
        self.assertEqual(link, '</v2/_catalog?n=2&last=b>; rel="next"')

    def test_lastPage(self):
        """
        The page that reaches the end has no link.
        """
        page, link = _paginate(
            _ArgsRequest(n="2", last="c"), list(self.ITEMS), "/v2/x/tags/list", "x"
        )
        self.assertEqual(page, ["d", "e"])
        self.assertIsNone(link)

    def test_lastOnly(self):
        """
        C{last} alone returns everything after it, also when it is not an
        item itself.
        """
        self.assertEqual(_paginate(_ArgsRequest(last="bb"), list(self.ITEMS), "/p", "x"),
                         (["c", "d", "e"], None))
        self.assertEqual(_paginate(_ArgsRequest(last="z"), list(self.ITEMS), "/p", "x"), ([], None))

    def test_zero(self):
        """
        C{n=0} is an empty page without a link.
        """
        self.assertEqual(_paginate(_ArgsRequest(n="0"), list(self.ITEMS), "/p", "x"), ([], None))

    def test_linkQuotesLast(self):
        """
        The item in the link is percent-encoded (names contain slashes).
        """
        page, link = _paginate(_ArgsRequest(n="1"), ["a/b", "c"], "/v2/_catalog", "x")
        self.assertEqual(page, ["a/b"])
        self.assertEqual(link, '</v2/_catalog?n=1&last=a%2Fb>; rel="next"')

    def test_invalidNumber(self):
        """
        A negative or non-integer C{n} is C{PAGINATION_NUMBER_INVALID}.
        """
        for value in ["-1", "x", "", "1.5"]:
            with self.assertRaises(RegistryError, msg=value) as caught:
                _paginate(_ArgsRequest(n=value), list(self.ITEMS), "/p", "x")
            self.assertEqual(caught.exception.code, "PAGINATION_NUMBER_INVALID")
            self.assertEqual(caught.exception.status, 400)
