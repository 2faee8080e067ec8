"""
Tests for L{zotwist.ops.openapi}: the OpenAPI document is valid, describes
exactly what the server answers, holds up against schemathesis, and the
Swagger UI is served from the package's files.
"""

import json
import os
import re
import sys

from openapi_spec_validator import validate
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import startRegistry
from zotwist.ops.openapi import buildDocument, swaggerAssetsDirectory
from zotwist.web.routes import METHODS, matchRoute

METRICS = {"extensions": {"metrics": {"enable": True}}}
HTTP_METHODS = {"get", "head", "post", "put", "patch", "delete", "options", "trace"}

#: A value for each path parameter, to turn templates into real paths.
SAMPLES = {
    "name": "team/app",
    "reference": "latest",
    "digest": "sha256:" + "0" * 64,
    "uploadID": "0" * 32,
}

#: The checkout, where tests/schemathesis.toml is.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def concrete(template: str) -> str:
    """
    A real path for a documented path template.
    """
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], template)


def operations(document: dict):
    """
    Yield C{(path, METHOD)} for every documented operation.
    """
    for path, item in document["paths"].items():
        for method in item:
            if method in HTTP_METHODS:
                yield path, method.upper()


class DocumentTests(SynchronousTestCase):
    """
    The document on its own.
    """

    def test_valid(self):
        """
        The document is valid OpenAPI 3.0, with and without the metrics
        path.
        """
        validate(buildDocument("/metrics"))
        validate(buildDocument(None))

    def test_everyRouteDocumented(self):
        """
        Every C{/v2} route of L{zotwist.web.routes.METHODS} is documented
        with exactly its methods (and C{HEAD} where C{GET} is), and every
        documented C{/v2} path is one of those routes.
        """
        document = buildDocument(None)
        documented: dict[str, set] = {}
        for path, method in operations(document):
            if not path.startswith("/v2"):
                continue
            route = matchRoute(concrete(path).encode())
            self.assertIsNotNone(route, f"documented {path} is not a route")
            documented.setdefault(route.name, set()).add(method)
        expected = {
            name: set(methods) | ({"HEAD"} if "GET" in methods else set())
            for name, methods in METHODS.items()
        }
        self.assertEqual(documented, expected)

    def test_metricsOnlyWhenEnabled(self):
        """
        The metrics path is documented where it is served, and not at all
        when metrics are off.
        """
        self.assertIn("/ops/prom", buildDocument("/ops/prom")["paths"])
        paths = buildDocument(None)["paths"]
        self.assertFalse([p for p in paths if "metrics" in p or "prom" in p])

    def test_errorCodes(self):
        """
        The error document's codes are the registry's.
        """
        from zotwist.errors import CODES

        schema = buildDocument(None)["components"]["schemas"]["ErrorResponse"]
        codes = schema["properties"]["errors"]["items"]["properties"]["code"]["enum"]
        self.assertEqual(set(codes), set(CODES))


class ServedDocumentTests(TestCase):
    """
    The document the running server serves, against what it answers.
    """

    async def test_served(self):
        """
        C{/openapi.json} is the valid document of this configuration.
        """
        reg = await startRegistry(self, METRICS)
        resp = await reg.client.get(reg.url + "/openapi.json")
        self.assertEqual(resp.code, 200)
        self.assertEqual(resp.headers.getRawHeaders("content-type"), ["application/json"])
        document = json.loads(await resp.content())
        validate(document)
        self.assertEqual(document, json.loads(json.dumps(buildDocument("/metrics"))))

    async def test_rootChildrenDocumented(self):
        """
        Every path the root resource answers (C{/v2}, the probes, the
        metrics, the document, the UI) is documented.
        """
        reg = await startRegistry(self, METRICS)
        operations_ = reg.service.getServiceNamed("ops").operations
        paths = list(operations_.document["paths"])
        children = [name.decode() for name in operations_.site.root.children]
        self.assertEqual(
            sorted(children),
            sorted(["v2", "livez", "readyz", "startupz", "metrics", "openapi.json", "swagger"]),
        )
        for child in children:
            self.assertTrue(
                any(p == "/" + child or p.startswith("/" + child + "/") for p in paths),
                f"/{child} is served but not documented",
            )

    async def test_everyDocumentedOperationAnswered(self):
        """
        Every documented operation reaches a handler: none is answered with
        the unknown-endpoint 404, a 405 or a 501.
        """
        reg = await startRegistry(self, METRICS)
        document = buildDocument("/metrics")
        for path, method in operations(document):
            url = reg.url + concrete(path)
            body = b"{}" if method in ("PUT", "PATCH", "POST") else None
            resp = await reg.client.request(method, url, data=body)
            content = await resp.content()
            where = f"{method} {path}: {resp.code} {content[:200]!r}"
            self.assertNotIn(resp.code, (405, 501), where)
            self.assertFalse(resp.code == 404 and b"no such endpoint" in content, where)


class SwaggerTests(TestCase):
    """
    The Swagger UI, offline.
    """

    async def test_page(self):
        """
        C{/swagger/} is an HTML page that loads the UI from the registry
        itself (no CDN) and points it at C{/openapi.json}; C{/swagger}
        redirects there, and zot's C{/swagger/v2/} works too.
        """
        reg = await startRegistry(self)
        resp = await reg.client.get(reg.url + "/swagger/")
        page = (await resp.content()).decode()
        self.assertEqual(resp.code, 200)
        self.assertIn("text/html", resp.headers.getRawHeaders("content-type")[0])
        self.assertIn('src="swagger-ui-bundle.js"', page)
        self.assertNotIn("//", page.replace("<!DOCTYPE html>", ""))
        resp = await reg.client.get(reg.url + "/swagger/swagger-initializer.js")
        self.assertIn(b'url: "/openapi.json"', await resp.content())
        resp = await reg.client.get(reg.url + "/swagger", allow_redirects=False)
        await resp.content()
        self.assertEqual(
            (resp.code, resp.headers.getRawHeaders("location")), (301, ["/swagger/"])
        )
        resp = await reg.client.get(reg.url + "/swagger/v2/index.html")
        self.assertEqual((resp.code, await resp.content()), (200, page.encode()))

    async def test_asset(self):
        """
        The UI's script is the package's file, byte for byte, with a script
        content type; files outside the asset list are not served.
        """
        reg = await startRegistry(self)
        resp = await reg.client.get(reg.url + "/swagger/swagger-ui-bundle.js")
        data = await resp.content()
        with open(os.path.join(swaggerAssetsDirectory(), "swagger-ui-bundle.js"), "rb") as f:
            self.assertEqual(data, f.read())
        self.assertEqual(
            resp.headers.getRawHeaders("content-type"), ["text/javascript; charset=utf-8"]
        )
        for path in ("/swagger/index.j2", "/swagger/..%2F..%2Fsetup.py", "/swagger/a/b/c"):
            resp = await reg.client.get(reg.url + path)
            await resp.content()
            self.assertEqual(resp.code, 404, path)


class SchemathesisTests(TestCase):
    """
    schemathesis generates requests from the document and checks the
    answers against it.
    """

    timeout = 120

    async def test_schemathesis(self):
        """
        Every schemathesis check passes on every operation, over the
        examples, coverage, fuzzing and stateful phases (a few examples per
        operation, a fixed seed, so the run is bounded and repeatable; run
        C{python -m schemathesis.cli --config-file tests/schemathesis.toml
        run URL/openapi.json --checks all} against a registry for a longer
        random one).  The statuses the schema cannot express are listed,
        with reasons, in C{tests/schemathesis.toml}.
        """
        reg = await startRegistry(self, METRICS)
        workdir = self.mktemp()
        os.makedirs(workdir)
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [
                "-m", "schemathesis.cli",
                "--no-color",
                "--config-file", os.path.join(CHECKOUT, "tests", "schemathesis.toml"),
                "run", reg.url + "/openapi.json",
                "--checks", "all",
                "--max-examples", "3",
                "--seed", "1",
                "--workers", "1",
                "--request-timeout", "10",
            ],
            env=dict(os.environ),
            path=workdir,
        )
        output = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, output[-6000:])
        # Every operation is tested, except that schemathesis leaves out
        # the GET of the schema it was loaded from.
        count = len(list(operations(buildDocument("/metrics")))) - 1
        self.assertRegex(output, rf"Selected: {count}/{count}\s+Tested: {count}\b")


class FindingsTests(TestCase):
    """
    What schemathesis found in the server, fixed (regression tests).
    """

    async def test_encodedColonInDigest(self):
        """
        A digest or reference whose colon is percent-encoded (as HTTP
        libraries that quote every path parameter send it) means the same
        digest: a blob or manifest is found, an unknown one is a 404, not a
        400 DIGEST_INVALID.  An encoded slash still never is decoded.
        """
        from tests.apihelpers import assertError, pushBlob, pushImage

        reg = await startRegistry(self)
        digest = await pushBlob(reg, "enc", b"encoded colon")
        resp = await reg.client.get(f"{reg.url}/v2/enc/blobs/{digest.replace(':', '%3A')}")
        self.assertEqual((resp.code, await resp.content()), (200, b"encoded colon"))
        image = await pushImage(reg, "enc", "t", "encoded")
        resp = await reg.client.head(
            f"{reg.url}/v2/enc/manifests/{image.digest.replace(':', '%3a')}"
        )
        await resp.content()
        self.assertEqual(resp.code, 200)
        resp = await reg.client.get(f"{reg.url}/v2/enc/blobs/sha256%3A{'0' * 64}")
        await assertError(resp, 404, "BLOB_UNKNOWN")
        resp = await reg.client.get(f"{reg.url}/v2/enc/blobs/sha256:..%2F..%2F{'0' * 58}")
        await assertError(resp, 400, "DIGEST_INVALID")

    async def test_annotationValuesAreStrings(self):
        """
        A manifest whose annotations (top-level or in a descriptor) hold
        anything but strings is refused with 400 MANIFEST_INVALID, as the
        image-spec's C{map[string]string} (and zot) require; C{null}
        annotations still read as none.
        """
        from tests.apihelpers import OCI_MANIFEST, assertError, makeImage, putManifest

        reg = await startRegistry(self)
        image = makeImage("annotations")
        manifest = json.loads(image.manifest)
        for bad in ({"a": {}}, {"a": 1}, {"a": None}):
            document = dict(manifest, annotations=bad)
            resp = await putManifest(reg, "ann", "t", json.dumps(document).encode(), OCI_MANIFEST)
            await assertError(resp, 400, "MANIFEST_INVALID")
            layers = [dict(manifest["layers"][0], annotations=bad)]
            document = dict(manifest, layers=layers)
            resp = await putManifest(reg, "ann", "t", json.dumps(document).encode(), OCI_MANIFEST)
            await assertError(resp, 400, "MANIFEST_INVALID")
