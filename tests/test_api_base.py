"""
HTTP API tests for the base endpoint (end-1), routing and the error format.

Every test starts its own registry on loopback with
L{tests.support.startRegistry} and talks to it with treq.
"""

import json

from twisted.trial import unittest

from tests.apihelpers import (
    assertError,
    body,
    digestOf,
    header,
    mediaTypeOf,
    pushImage,
)
from tests.support import startRegistry


class BaseEndpointTests(unittest.TestCase):
    """
    C{GET /v2/} (end-1) tells clients the registry speaks the v2 API.
    """

    async def test_getV2(self):
        """
        C{GET /v2/} answers 200 with C{Docker-Distribution-API-Version:
        registry/2.0} (the spec's SHOULD; Docker clients check it) and a JSON
        body C{{}}.
        """
        reg = await startRegistry(self)
        resp = await reg.client.get(reg.url + "/v2/")
        raw = await body(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(header(resp, "Docker-Distribution-API-Version"), "registry/2.0")
        self.assertEqual(mediaTypeOf(resp), "application/json")
        self.assertEqual(json.loads(raw), {})

    async def test_headV2(self):
        """
        C{HEAD /v2/} answers like C{GET} (200 and the version header) with no
        body: RFC 9110 requires general-purpose servers to support HEAD
        wherever they support GET, and some clients probe with it.
        """
        reg = await startRegistry(self)
        resp = await reg.client.head(reg.url + "/v2/")
        raw = await body(resp)
        self.assertEqual(resp.code, 200)
        self.assertEqual(header(resp, "Docker-Distribution-API-Version"), "registry/2.0")
        self.assertEqual(raw, b"")


class RoutingErrorTests(unittest.TestCase):
    """
    Paths and methods the API does not define answer with the spec's error
    document, never with an HTML page or a 500.
    """

    async def test_unknownRoutes(self):
        """
        Paths under C{/v2/} that match no endpoint answer 404 with an OCI
        error document (C{Content-Type: application/json},
        C{{"errors": [{"code": ..., "message": ...}]}}).
        """
        reg = await startRegistry(self)
        await pushImage(reg, "myrepo", "latest", "routing")
        for path in [
            "/v2/myrepo",
            "/v2/myrepo/",
            "/v2/myrepo/nothing-here",
            "/v2/myrepo/tags",
            "/v2/myrepo/blobs",
            "/v2/myrepo/manifests",
            "/v2/_unknown_extension",
        ]:
            resp = await reg.client.get(reg.url + path)
            try:
                await assertError(resp, 404)
            except AssertionError as e:
                self.fail(f"GET {path}: {e}")

    async def test_wrongMethods(self):
        """
        A defined path with a method it does not support answers 405 with an
        OCI error document whose code is C{UNSUPPORTED}.  The repository
        exists, so the answer can only be about the method.
        """
        reg = await startRegistry(self)
        image = await pushImage(reg, "myrepo", "latest", "methods")
        blob = digestOf(image.layers[0])
        for method, path in [
            ("POST", "/v2/"),
            ("DELETE", "/v2/"),
            ("POST", "/v2/myrepo/manifests/latest"),
            ("PATCH", "/v2/myrepo/manifests/latest"),
            ("PUT", "/v2/myrepo/tags/list"),
            ("DELETE", "/v2/myrepo/tags/list"),
            ("POST", f"/v2/myrepo/blobs/{blob}"),
            ("PUT", f"/v2/myrepo/blobs/{blob}"),
            ("PUT", f"/v2/myrepo/referrers/{image.digest}"),
            ("POST", "/v2/_catalog"),
        ]:
            resp = await reg.client.request(method, reg.url + path, data=b"")
            try:
                await assertError(resp, 405, "UNSUPPORTED")
            except AssertionError as e:
                self.fail(f"{method} {path}: {e}")

    async def test_errorDocumentShape(self):
        """
        A typical client error (an unknown manifest) carries exactly the
        spec's shape: a top-level object whose only required key is
        C{errors}, a non-empty list of objects with a string C{code} and a
        string C{message}.
        """
        reg = await startRegistry(self)
        await pushImage(reg, "myrepo", "latest", "shape")
        resp = await reg.client.get(reg.url + "/v2/myrepo/manifests/nope")
        raw = await body(resp)
        self.assertEqual(resp.code, 404)
        self.assertEqual(mediaTypeOf(resp), "application/json")
        document = json.loads(raw)
        self.assertIsInstance(document["errors"], list)
        self.assertTrue(document["errors"])
        for entry in document["errors"]:
            self.assertIsInstance(entry["code"], str)
            self.assertIsInstance(entry["message"], str)
            self.assertRegex(entry["code"], r"^[A-Z_]+$")
