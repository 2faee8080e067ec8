# -*- test-case-name: tests.test_errors -*-
"""
The OCI distribution-spec error codes and the JSON bodies that carry them.

Every failure a client can cause is raised as a L{RegistryError} somewhere
below the web layer; the router turns it into the spec's body
C{{"errors": [{"code": ..., "message": ..., "detail": ...}]}} with the status
the spec gives that code.  Nothing a client sends should end as a 500.
"""

import json
from typing import Any

#: code -> (default HTTP status, default message), from the spec's table.
CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "UNKNOWN": (500, "unknown error"),
}


class RegistryError(Exception):
    """
    A client-facing failure with an OCI error code.

    @ivar code: one of the keys of L{CODES}.
    @ivar status: the HTTP status to answer with.
    @ivar message: a human-readable sentence.
    @ivar detail: anything JSON-serialisable that helps the client, or L{None}.
    @ivar headers: extra response headers, as a dict of str to str.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        defaultStatus, defaultMessage = CODES[code]
        self.code = code
        self.status = status if status is not None else defaultStatus
        self.message = message if message is not None else defaultMessage
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(f"{code}: {self.message}")

    def body(self) -> bytes:
        """
        @return: the spec's JSON error document for this error.
        """
        return errorBody([self])


def errorBody(errors: "list[RegistryError]") -> bytes:
    """
    Serialise one or more errors into a single OCI error document, as the
    spec allows (for example several C{MANIFEST_BLOB_UNKNOWN} at once).
    """
    entries = []
    for error in errors:
        entry: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.detail is not None:
            entry["detail"] = error.detail
        entries.append(entry)
    return json.dumps({"errors": entries}).encode("utf-8")


class ManifestBlobsUnknown(RegistryError):
    """
    A manifest names blobs or manifests the repository does not hold; one
    C{MANIFEST_BLOB_UNKNOWN} entry per missing digest.
    """

    def __init__(self, digests: "list[str]") -> None:
        super().__init__(
            "MANIFEST_BLOB_UNKNOWN",
            detail={"digests": list(digests)},
        )
        self.digests = list(digests)

    def body(self) -> bytes:
        return errorBody(
            [
                RegistryError("MANIFEST_BLOB_UNKNOWN", detail={"digest": d})
                for d in self.digests
            ]
        )
