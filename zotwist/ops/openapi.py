# -*- test-case-name: tests.test_ops_openapi -*-
"""
The registry's API described as OpenAPI 3.0, served at C{/openapi.json},
and a Swagger UI for it at C{/swagger/}.

L{buildDocument} describes every endpoint the server answers: the OCI
distribution-spec API under C{/v2} (every route and method of
L{zotwist.web.routes.METHODS}, with C{HEAD} wherever C{GET} is), the health
probes, the metrics endpoint when C{extensions.metrics} is on, this
document and the UI.  A test holds the two together: every route the
server answers is documented, and every documented path is answered.

OpenAPI path parameters cannot contain C{/}, and OCI repository names can
(C{team/app}).  The C{name} parameter is therefore described as one
component; a name of several components is sent with literal slashes, as
every OCI client does (an encoded C{%2F} is refused as C{NAME_INVALID}).

The UI's files come from the C{swagger-ui-bundle} package and are served
from here, so the page works without internet access.
"""

import json
import mimetypes
import os

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from zotwist import DIST_SPEC_VERSION, __version__, oci
from zotwist.errors import CODES
from zotwist.ops.endpoints import notFound, refuseMethod, sendBody

_JSON = "application/json"
_OCTETS = "application/octet-stream"
#: Manifest media types and the schema of each.
_MANIFEST_TYPES = {
    oci.OCI_MANIFEST: "ImageManifest",
    oci.OCI_INDEX: "Index",
    oci.DOCKER_MANIFEST: "ImageManifest",
    oci.DOCKER_LIST: "Index",
}

_COMPONENT = r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$"
_TAG = r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"
#: The digests this registry accepts: the spec's grammar narrowed to the
#: algorithms it implements (another algorithm is refused as DIGEST_INVALID).
_DIGEST = r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"
_SHA256 = "sha256:" + "0" * 64


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _nullable(schema: dict) -> dict:
    """
    C{schema}, or JSON C{null}: the registry reads a C{null} member as an
    absent one, as zot and the Docker registry (Go's JSON decoding) do.
    """
    if "$ref" in schema:
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


def _header(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "schema": schema or {"type": "string"}}


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {_JSON: {"schema": _ref("schemas", "ErrorResponse")}},
    }


def _errors(*statuses: int) -> dict:
    """
    The error responses every C{/v2} operation may give, plus C{statuses}.
    """
    names = {
        400: "BadRequest", 401: "Unauthorized", 403: "Denied", 404: "NotFound",
        405: "MethodNotAllowed", 413: "TooLarge", 415: "UnsupportedMediaType",
        416: "RangeInvalid", 429: "TooManyRequests", 500: "InternalError",
    }
    wanted = sorted({401, 403, 405, 429, 500, *statuses})
    return {str(status): _ref("responses", names[status]) for status in wanted}


def _empty(description: str, headers: dict | None = None, links: dict | None = None) -> dict:
    response: dict = {"description": description}
    if headers:
        response["headers"] = headers
    if links:
        response["links"] = links
    return response


def _links(operations: tuple, **parameters: str) -> dict:
    """
    OpenAPI links from a response to C{operations} (operation ids), with
    C{name} taken from the request: how a client (or schemathesis's
    stateful phase) follows an upload session or a pushed manifest.
    """
    values = {"name": "$request.path.name", **parameters}
    return {
        op[0].upper() + op[1:]: {"operationId": op, "parameters": dict(values)}
        for op in operations
    }


def _head(get: dict, summary: str) -> dict:
    """
    The C{HEAD} twin of a C{GET} operation: same parameters and statuses,
    no bodies.
    """
    responses = {}
    for status, response in get["responses"].items():
        if "$ref" in response:
            responses[status] = _ref("responses", "Head" + response["$ref"].rsplit("/", 1)[1])
            continue
        responses[status] = {k: v for k, v in response.items() if k != "content"}
    head = {k: v for k, v in get.items() if k not in ("responses", "summary", "operationId")}
    head["summary"] = summary
    head["operationId"] = get["operationId"].replace("get", "head", 1)
    head["responses"] = responses
    return head


def _components() -> dict:
    errorCodes = sorted(CODES)
    responses = {
        "BadRequest": _error("The request is malformed (name, reference, digest, parameters)"),
        "Unauthorized": _error("Authentication is required (UNAUTHORIZED)"),
        "Denied": _error("The caller may not do this (DENIED)"),
        "NotFound": _error(
            "The repository, manifest, blob or upload session is unknown "
            "(NAME_UNKNOWN, MANIFEST_UNKNOWN, BLOB_UNKNOWN, BLOB_UPLOAD_UNKNOWN)"
        ),
        "MethodNotAllowed": {
            "description": "The operation is not supported here (UNSUPPORTED)",
            "headers": {"Allow": _ref("headers", "Allow")},
            "content": {_JSON: {"schema": _ref("schemas", "ErrorResponse")}},
        },
        "TooLarge": _error("The manifest is larger than 4 MiB"),
        "UnsupportedMediaType": _error("The manifest's media type is not accepted"),
        "RangeInvalid": {
            "description": (
                "The requested range cannot be served, or an upload chunk does not "
                "continue the session"
            ),
            "headers": {
                "Content-Range": _ref("headers", "ContentRange"),
                "Range": _ref("headers", "UploadRange"),
            },
            "content": {_JSON: {"schema": _ref("schemas", "ErrorResponse")}},
        },
        "TooManyRequests": _error("Too many requests (TOOMANYREQUESTS)"),
        "InternalError": _error("An unexpected server error (UNKNOWN)"),
    }
    for name, response in list(responses.items()):
        responses["Head" + name] = {k: v for k, v in response.items() if k != "content"}
    return {
        "schemas": {
            "ErrorResponse": {
                "type": "object",
                "description": "The distribution-spec error document.",
                "required": ["errors"],
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": errorCodes},
                                "message": {"type": "string"},
                                "detail": {
                                    "description": "Anything that helps the client; any JSON",
                                },
                            },
                        },
                    },
                },
            },
            "Catalog": {
                "type": "object",
                "required": ["repositories"],
                "properties": {"repositories": {"type": "array", "items": {"type": "string"}}},
            },
            "TagList": {
                "type": "object",
                "required": ["name", "tags"],
                "properties": {
                    "name": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Descriptor": {
                "type": "object",
                "required": ["mediaType", "digest", "size"],
                "properties": {
                    "mediaType": {"type": "string", "minLength": 1},
                    "digest": {"type": "string", "pattern": _DIGEST},
                    "size": {"type": "integer", "minimum": 0},
                    "artifactType": _nullable({"type": "string"}),
                    "annotations": _nullable({
                        "type": "object", "additionalProperties": {"type": "string"},
                    }),
                },
            },
            "ImageIndex": {
                "type": "object",
                "description": "An OCI image index (the referrers list).",
                "required": ["schemaVersion", "manifests"],
                "properties": {
                    "schemaVersion": {"type": "integer", "enum": [2]},
                    "mediaType": {"type": "string"},
                    "manifests": {"type": "array", "items": _ref("schemas", "Descriptor")},
                },
            },
            "ImageManifest": {
                "type": "object",
                "description": (
                    "An OCI image manifest or a Docker schema 2 manifest. Every blob it "
                    "names must be in the repository (else MANIFEST_BLOB_UNKNOWN)."
                ),
                "required": ["schemaVersion", "config", "layers"],
                "properties": {
                    "schemaVersion": {"type": "integer", "enum": [2]},
                    "mediaType": _nullable({"type": "string"}),
                    "artifactType": _nullable({"type": "string"}),
                    "config": _ref("schemas", "Descriptor"),
                    "layers": _nullable(
                        {"type": "array", "items": _ref("schemas", "Descriptor")}
                    ),
                    "subject": _nullable(_ref("schemas", "Descriptor")),
                    "annotations": _nullable({
                        "type": "object", "additionalProperties": {"type": "string"},
                    }),
                },
            },
            "Index": {
                "type": "object",
                "description": (
                    "An OCI image index or a Docker manifest list. Every manifest it "
                    "names must be in the repository (else MANIFEST_BLOB_UNKNOWN)."
                ),
                "required": ["schemaVersion", "manifests"],
                "properties": {
                    "schemaVersion": {"type": "integer", "enum": [2]},
                    "mediaType": _nullable({"type": "string"}),
                    "artifactType": _nullable({"type": "string"}),
                    "manifests": {"type": "array", "items": _ref("schemas", "Descriptor")},
                    "subject": _nullable(_ref("schemas", "Descriptor")),
                    "annotations": _nullable({
                        "type": "object", "additionalProperties": {"type": "string"},
                    }),
                },
            },
        },
        "parameters": {
            "name": {
                "name": "name",
                "in": "path",
                "required": True,
                "description": (
                    "The repository name. A name of several components (team/app) "
                    "is sent with literal slashes; OpenAPI cannot express that, so "
                    "one component is described here."
                ),
                "schema": {"type": "string", "pattern": _COMPONENT, "maxLength": 255},
                "example": "library",
            },
            "reference": {
                "name": "reference",
                "in": "path",
                "required": True,
                "description": "A tag or a digest",
                "schema": {
                    "type": "string",
                    "anyOf": [
                        {"pattern": _TAG, "maxLength": 128},
                        {"pattern": _DIGEST},
                    ],
                },
                "example": "latest",
            },
            "digest": {
                "name": "digest",
                "in": "path",
                "required": True,
                "description": "A content digest, algorithm:hex",
                "schema": {"type": "string", "pattern": _DIGEST},
                "example": _SHA256,
            },
            "uploadID": {
                "name": "uploadID",
                "in": "path",
                "required": True,
                "description": "The upload session id the POST gave",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "example": "0" * 32,
            },
            "n": {
                "name": "n",
                "in": "query",
                "required": False,
                "description": "At most this many entries",
                "schema": {"type": "integer", "minimum": 0},
            },
            "last": {
                "name": "last",
                "in": "query",
                "required": False,
                "description": "Start after this entry (from the previous page's Link)",
                "schema": {"type": "string"},
            },
        },
        "headers": {
            "DockerContentDigest": _header(
                "The digest of the content", {"type": "string", "pattern": _DIGEST}
            ),
            "Location": _header("Where the content or the upload session is"),
            "UploadRange": _header(
                "The bytes the upload session holds, 0-<last byte> (0-0 when empty)",
                {"type": "string", "pattern": "^0-[0-9]+$"},
            ),
            "DockerUploadUUID": _header("The upload session id"),
            "ContentRange": _header("The byte range of a partial answer"),
            "ContentLength": _header("The body length", {"type": "integer", "minimum": 0}),
            "AcceptRanges": _header("Blob GETs honour one byte range", {
                "type": "string", "enum": ["bytes"],
            }),
            "ETag": _header("The content digest, quoted"),
            "Link": _header('The next page: <url>; rel="next"'),
            "OCISubject": _header(
                "The digest of the pushed manifest's subject",
                {"type": "string", "pattern": _DIGEST},
            ),
            "OCITag": _header("A tag applied by a push by digest with ?tag="),
            "OCIFiltersApplied": _header(
                "The filters applied to the referrers list", {
                    "type": "string", "enum": ["artifactType"],
                },
            ),
            "APIVersion": _header(
                "The registry API version", {"type": "string", "enum": ["registry/2.0"]}
            ),
            "Allow": _header("The methods the path answers"),
        },
        "responses": responses,
    }


def _v2Paths() -> dict:
    p = lambda name: _ref("parameters", name)  # noqa: E731
    h = lambda name: _ref("headers", name)  # noqa: E731
    apiVersion = {"Docker-Distribution-API-Version": h("APIVersion")}
    jsonBody = lambda schema: {_JSON: {"schema": _ref("schemas", schema)}}  # noqa: E731
    paths: dict = {}

    base = {
        "summary": "Check that the registry speaks the distribution-spec API",
        "operationId": "getBase",
        "tags": ["OCI distribution-spec"],
        "responses": {
            "200": {
                "description": "The API is supported",
                "headers": apiVersion,
                "content": {_JSON: {"schema": {"type": "object"}}},
            },
            **_errors(),
        },
    }
    paths["/v2/"] = {"get": base, "head": _head(base, "Check the API (headers only)")}

    catalog = {
        "summary": "List the repositories",
        "operationId": "getCatalog",
        "tags": ["OCI distribution-spec"],
        "parameters": [p("n"), p("last")],
        "responses": {
            "200": {
                "description": "A page of repository names, sorted",
                "headers": {**apiVersion, "Link": h("Link")},
                "content": jsonBody("Catalog"),
            },
            **_errors(400),
        },
    }
    paths["/v2/_catalog"] = {"get": catalog, "head": _head(catalog, "List the repositories")}

    tags = {
        "summary": "List a repository's tags",
        "operationId": "getTags",
        "tags": ["OCI distribution-spec"],
        "parameters": [p("n"), p("last")],
        "responses": {
            "200": {
                "description": "A page of tags, sorted",
                "headers": {**apiVersion, "Link": h("Link")},
                "content": jsonBody("TagList"),
            },
            **_errors(400, 404),
        },
    }
    paths["/v2/{name}/tags/list"] = {
        "parameters": [p("name")],
        "get": tags,
        "head": _head(tags, "List a repository's tags (headers only)"),
    }

    manifestHeaders = {
        **apiVersion,
        "Docker-Content-Digest": h("DockerContentDigest"),
        "ETag": h("ETag"),
        "Content-Length": h("ContentLength"),
    }
    getManifest = {
        "summary": "Pull a manifest by tag or digest",
        "operationId": "getManifest",
        "tags": ["OCI distribution-spec"],
        "parameters": [{
            "name": "Accept", "in": "header", "required": False,
            "description": "The manifest media types the client accepts",
            "schema": {"type": "string"},
        }],
        "responses": {
            "200": {
                "description": "The manifest, with its media type as Content-Type",
                "headers": manifestHeaders,
                "content": {t: {"schema": _ref("schemas", n)} for t, n in _MANIFEST_TYPES.items()},
            },
            **_errors(400, 404),
        },
    }
    putManifest = {
        "summary": "Push a manifest, tagged or by digest",
        "operationId": "putManifest",
        "tags": ["OCI distribution-spec"],
        "parameters": [{
            "name": "tag", "in": "query", "required": False,
            "description": "With a digest reference: tags to apply too (repeatable)",
            "schema": {"type": "array", "items": {"type": "string", "pattern": _TAG}},
            "style": "form", "explode": True,
        }],
        "requestBody": {
            "required": True,
            "content": {t: {"schema": _ref("schemas", n)} for t, n in _MANIFEST_TYPES.items()},
        },
        "responses": {
            "201": {
                "description": "Stored",
                "headers": {
                    **apiVersion,
                    "Location": h("Location"),
                    "Docker-Content-Digest": h("DockerContentDigest"),
                    "OCI-Subject": h("OCISubject"),
                    "OCI-Tag": h("OCITag"),
                },
                "links": _links(
                    ("getManifest", "deleteManifest"),
                    reference="$response.header.Docker-Content-Digest",
                ),
            },
            **_errors(400, 404, 413, 415),
        },
    }
    deleteManifest = {
        "summary": "Delete a manifest (by digest) or a tag",
        "operationId": "deleteManifest",
        "tags": ["OCI distribution-spec"],
        "responses": {
            "202": _empty("Deleted", apiVersion),
            **_errors(400, 404),
        },
    }
    paths["/v2/{name}/manifests/{reference}"] = {
        "parameters": [p("name"), p("reference")],
        "get": getManifest,
        "head": _head(getManifest, "Check that a manifest exists"),
        "put": putManifest,
        "delete": deleteManifest,
    }

    getBlob = {
        "summary": "Pull a blob, whole or one byte range",
        "operationId": "getBlob",
        "tags": ["OCI distribution-spec"],
        "parameters": [{
            "name": "Range", "in": "header", "required": False,
            "description": "One byte range, bytes=<first>-[<last>] or bytes=-<suffix>",
            "schema": {"type": "string"},
        }],
        "responses": {
            "200": {
                "description": "The blob",
                "headers": {
                    **apiVersion,
                    "Docker-Content-Digest": h("DockerContentDigest"),
                    "Content-Length": h("ContentLength"),
                    "Accept-Ranges": h("AcceptRanges"),
                    "ETag": h("ETag"),
                },
                "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
            },
            "206": {
                "description": "The requested range of the blob",
                "headers": {
                    **apiVersion,
                    "Docker-Content-Digest": h("DockerContentDigest"),
                    "Content-Length": h("ContentLength"),
                    "Content-Range": h("ContentRange"),
                    "Accept-Ranges": h("AcceptRanges"),
                },
                "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
            },
            **_errors(400, 404, 416),
        },
    }
    deleteBlob = {
        "summary": "Delete a blob",
        "operationId": "deleteBlob",
        "tags": ["OCI distribution-spec"],
        "responses": {
            "202": _empty("Deleted", {
                **apiVersion, "Docker-Content-Digest": h("DockerContentDigest"),
            }),
            **_errors(400, 404),
        },
    }
    paths["/v2/{name}/blobs/{digest}"] = {
        "parameters": [p("name"), p("digest")],
        "get": getBlob,
        "head": _head(getBlob, "Check that a blob exists, and its size"),
        "delete": deleteBlob,
    }

    sessionHeaders = {
        **apiVersion,
        "Location": h("Location"),
        "Range": h("UploadRange"),
        "Docker-Upload-UUID": h("DockerUploadUUID"),
    }
    stored = {
        **apiVersion,
        "Location": h("Location"),
        "Docker-Content-Digest": h("DockerContentDigest"),
    }
    blobLinks = _links(
        ("getBlob", "deleteBlob"), digest="$response.header.Docker-Content-Digest"
    )
    sessionLinks = _links(
        ("getUpload", "patchUpload", "putUpload", "deleteUpload"),
        uploadID="$response.header.Docker-Upload-UUID",
    )
    paths["/v2/{name}/blobs/uploads/"] = {
        "parameters": [p("name")],
        "post": {
            "summary": "Start an upload, upload a blob in one request, or mount a blob",
            "operationId": "postUpload",
            "tags": ["OCI distribution-spec"],
            "parameters": [
                {
                    "name": "digest", "in": "query", "required": False,
                    "description": "Upload the whole blob in this request's body",
                    "schema": {"type": "string", "pattern": _DIGEST},
                },
                {
                    "name": "mount", "in": "query", "required": False,
                    "description": "Mount this blob from another repository",
                    "schema": {"type": "string", "pattern": _DIGEST},
                },
                {
                    "name": "from", "in": "query", "required": False,
                    "description": "The repository to mount from",
                    "schema": {"type": "string"},
                },
                {
                    "name": "digest-algorithm", "in": "query", "required": False,
                    "description": "The digest algorithm the session will be closed with",
                    "schema": {"type": "string", "enum": ["sha256", "sha512"]},
                },
            ],
            "requestBody": {
                "required": False,
                "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "201": _empty("Blob stored or mounted", stored, blobLinks),
                "202": _empty("Upload session started", sessionHeaders, sessionLinks),
                **_errors(400, 404),
            },
        },
    }

    getUpload = {
        "summary": "Ask how much an upload session holds",
        "operationId": "getUpload",
        "tags": ["OCI distribution-spec"],
        "responses": {
            "204": _empty("The session's state", sessionHeaders),
            **_errors(400, 404),
        },
    }
    paths["/v2/{name}/blobs/uploads/{uploadID}"] = {
        "parameters": [p("name"), p("uploadID")],
        "get": getUpload,
        "head": _head(getUpload, "Ask how much an upload session holds (headers only)"),
        "patch": {
            "summary": "Append a chunk to an upload session",
            "operationId": "patchUpload",
            "tags": ["OCI distribution-spec"],
            "parameters": [{
                "name": "Content-Range", "in": "header", "required": False,
                "description": "<first>-<last> of this chunk; must continue the session",
                "schema": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
            }],
            "requestBody": {
                "required": False,
                "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "202": _empty("Chunk stored", sessionHeaders, sessionLinks),
                **_errors(400, 404, 416),
            },
        },
        "put": {
            "summary": "Close an upload session, with an optional last chunk",
            "operationId": "putUpload",
            "tags": ["OCI distribution-spec"],
            "parameters": [
                {
                    "name": "digest", "in": "query", "required": True,
                    "description": "The digest of the whole blob",
                    "schema": {"type": "string", "pattern": _DIGEST},
                },
                {
                    "name": "Content-Range", "in": "header", "required": False,
                    "description": "<first>-<last> of the last chunk",
                    "schema": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                },
            ],
            "requestBody": {
                "required": False,
                "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "201": _empty("Blob stored", stored, blobLinks),
                **_errors(400, 404, 416),
            },
        },
        "delete": {
            "summary": "Cancel an upload session",
            "operationId": "deleteUpload",
            "tags": ["OCI distribution-spec"],
            "responses": {
                "204": _empty("Cancelled", apiVersion),
                **_errors(400, 404),
            },
        },
    }

    referrers = {
        "summary": "List the manifests whose subject is a digest",
        "operationId": "getReferrers",
        "tags": ["OCI distribution-spec"],
        "parameters": [{
            "name": "artifactType", "in": "query", "required": False,
            "description": "Only referrers of this artifact type (repeatable)",
            "schema": {"type": "array", "items": {"type": "string"}},
            "style": "form", "explode": True,
        }],
        "responses": {
            "200": {
                "description": "An image index of the referrers (empty when none)",
                "headers": {**apiVersion, "OCI-Filters-Applied": h("OCIFiltersApplied")},
                "content": {oci.OCI_INDEX: {"schema": _ref("schemas", "ImageIndex")}},
            },
            **_errors(400),
        },
    }
    paths["/v2/{name}/referrers/{digest}"] = {
        "parameters": [p("name"), p("digest")],
        "get": referrers,
        "head": _head(referrers, "List the referrers (headers only)"),
    }
    return paths


def _probe(name: str, summary: str) -> dict:
    text = "text/plain; charset=utf-8"
    get = {
        "summary": summary,
        "operationId": f"get{name.capitalize()}",
        "tags": ["Health"],
        "responses": {
            "200": {
                "description": "The check passes",
                "content": {text: {"schema": {"type": "string", "enum": ["ok"]}}},
            },
            "500": {
                "description": "The check fails; the body says why",
                "content": {text: {"schema": {"type": "string"}}},
            },
        },
    }
    return {"get": get, "head": _head(get, summary + " (headers only)")}


def _page(operationId: str, summary: str, tag: str, contentType: str,
          schema: dict | None = None) -> dict:
    get = {
        "summary": summary,
        "operationId": operationId,
        "tags": [tag],
        "responses": {
            "200": {
                "description": summary,
                "content": {contentType: {"schema": schema or {"type": "string"}}},
            },
        },
    }
    return {"get": get, "head": _head(get, summary + " (headers only)")}


def buildDocument(metricsPath: str | None = None) -> dict:
    """
    The OpenAPI 3.0 document of this server.

    @param metricsPath: where the metrics are served, or L{None} when
        C{extensions.metrics} is off (the path is then not documented,
        because it is not answered).
    """
    paths = _v2Paths()
    paths["/livez"] = _probe("livez", "Liveness: the process runs")
    paths["/readyz"] = _probe(
        "readyz", "Readiness: storage is usable and the registry is not shutting down"
    )
    paths["/startupz"] = _probe("startupz", "Start-up: storage has been prepared")
    if metricsPath is not None:
        paths[metricsPath] = _page(
            "getMetrics", "Prometheus metrics", "Operations",
            "text/plain; version=0.0.4; charset=utf-8",
        )
    paths["/openapi.json"] = _page(
        "getOpenAPI", "This OpenAPI document", "Operations", _JSON, {"type": "object"},
    )
    paths["/swagger/"] = _page(
        "getSwaggerUI", "The Swagger UI for this document", "Operations", "text/html",
    )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "zotwist OCI registry",
            "version": __version__,
            "description": (
                "An OCI distribution-spec registry (distribution-spec "
                f"{DIST_SPEC_VERSION}) with zot's configuration and operational "
                "endpoints. Errors under /v2 are the spec's error document."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "OCI distribution-spec"},
            {"name": "Health"},
            {"name": "Operations"},
        ],
        "paths": paths,
        "components": _components(),
    }


class OpenAPIResource(Resource):
    """
    C{/openapi.json}: the document, serialised once.
    """

    isLeaf = True

    def __init__(self, document: dict):
        super().__init__()
        self._body = json.dumps(document, indent=1, sort_keys=False).encode("utf-8")

    def render(self, request):
        request.opsRoute = "openapi"
        """
        Answer with the document.
        """
        if request.postpath not in ([], [b""]):
            return notFound(request)
        if refuseMethod(request, ("GET",)):
            return NOT_DONE_YET
        return sendBody(request, self._body, b"application/json")


_INDEX = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>zotwist API</title>
<link rel="stylesheet" href="swagger-ui.css">
<link rel="icon" type="image/png" href="favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="swagger-ui-bundle.js" charset="UTF-8"></script>
<script src="swagger-ui-standalone-preset.js" charset="UTF-8"></script>
<script src="swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"""

_INITIALIZER = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
    validatorUrl: null
  });
};
"""

#: The files of the package's Swagger UI that the page uses.
_ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-16x16.png",
    "favicon-32x32.png",
)


def swaggerAssetsDirectory() -> str:
    """
    The directory of the Swagger UI files of the C{swagger-ui-bundle}
    package.
    """
    from swagger_ui_bundle import swagger_ui_path

    return str(swagger_ui_path)


class SwaggerResource(Resource):
    """
    C{/swagger/}: our page and initializer (pointing at C{/openapi.json}),
    and the package's assets, read once in the disk pool and kept.  zot's
    C{/swagger/v2/} spelling is answered too.

    @param runner: the L{zotwist.threads.IBlockingRunner} files are read in.
    """

    isLeaf = True

    def __init__(self, runner, directory: str | None = None):
        super().__init__()
        self._runner = runner
        self._directory = directory
        self._cache: dict[str, bytes] = {
            "index.html": _INDEX,
            "swagger-initializer.js": _INITIALIZER,
        }

    def render(self, request):
        request.opsRoute = "swagger"
        """
        Answer with the page, the initializer or one of the package's assets.
        """
        segments = list(request.postpath)
        if not segments:
            # /swagger: the page's relative links need the trailing slash.
            return sendBody(request, b"", b"text/plain", 301, {b"Location": b"/swagger/"})
        if segments[0] == b"v2" and len(segments) > 1:
            segments = segments[1:]
        if len(segments) != 1:
            return notFound(request)
        name = segments[0].decode("ascii", "replace") or "index.html"
        if name not in self._cache and name not in _ASSETS:
            return notFound(request)
        if refuseMethod(request, ("GET",)):
            return NOT_DONE_YET
        cached = self._cache.get(name)
        if cached is not None:
            return sendBody(request, cached, _contentType(name))
        d = self._runner.run(self._read, name)

        def read(data):
            self._cache[name] = data
            if not request._disconnected:
                sendBody(request, data, _contentType(name))

        def failed(failure):
            if not request._disconnected:
                notFound(request)

        d.addCallbacks(read, failed)
        return NOT_DONE_YET

    def _read(self, name: str) -> bytes:
        directory = self._directory or swaggerAssetsDirectory()
        with open(os.path.join(directory, name), "rb") as f:
            return f.read()


def _contentType(name: str) -> bytes:
    if name.endswith(".js"):
        return b"text/javascript; charset=utf-8"
    if name.endswith(".html"):
        return b"text/html; charset=utf-8"
    if name.endswith(".css"):
        return b"text/css; charset=utf-8"
    guessed, _ = mimetypes.guess_type(name)
    return (guessed or "application/octet-stream").encode()


__all__ = ["buildDocument", "OpenAPIResource", "SwaggerResource", "swaggerAssetsDirectory"]
