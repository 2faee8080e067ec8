# -*- test-case-name: tests.test_s3_objects -*-
"""
The object store, as the S3 driver needs it: boto3 calls, each run in a
thread pool, returning L{Deferred}s.

boto3 is blocking; a slow or unreachable S3 must stall only the request
that waits for it, never the reactor.  L{BlockingObjects} holds the plain
calls (for code already running in a pool thread, such as an upload writer
sending a part), L{ObjectStore} wraps each in
L{zotwist.threads.IBlockingRunner.run}.

Keys are full object keys (the caller adds the store's root directory).
ETags are returned without their quotes: Ceph Pacific's RGW answers 412 to an
C{If-Match} with the quoted form even when it matches (see
C{/work/shared/ceph-s3.md}), and unquoted works everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from twisted.internet.defer import Deferred

#: Objects up to this size are copied with one CopyObject; larger ones part by
#: part with UploadPartCopy (S3's limit for CopyObject is 5 GiB).
COPY_LIMIT = 5 * 1024 * 1024 * 1024
#: Part size of a multipart copy.
COPY_PART = 512 * 1024 * 1024
#: How much one read of a ranged GET returns.
READ_SIZE = 1024 * 1024


class PreconditionFailed(Exception):
    """
    A conditional write (C{If-None-Match: *} or C{If-Match: <etag>}) was
    refused: the object exists, or changed.
    """


@dataclass(frozen=True)
class ObjectInfo:
    """
    One object of a listing.

    @ivar key: its full key.
    @ivar size: its length in bytes.
    @ivar mtime: its last modification, as a Unix time.
    @ivar etag: its ETag, unquoted.
    """

    key: str
    size: int
    mtime: float
    etag: str = ""


@dataclass(frozen=True)
class Listing:
    """
    The result of a listing: objects, and with a delimiter the common
    prefixes (the "directories"), each ending in the delimiter.
    """

    objects: list[ObjectInfo]
    prefixes: list[str]


@dataclass(frozen=True)
class MultipartInfo:
    """
    An unfinished multipart upload.

    @ivar initiated: when it was created, as a Unix time.
    """

    key: str
    uploadID: str
    initiated: float


def _unquote(etag: str | None) -> str:
    return (etag or "").strip('"')


def _code(error) -> tuple[str, int]:
    """
    The S3 error code and HTTP status of a botocore C{ClientError}.
    """
    response = getattr(error, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _isMissing(error) -> bool:
    code, status = _code(error)
    return status == 404 or code in ("NoSuchKey", "404", "NotFound")


def _isPrecondition(error) -> bool:
    code, status = _code(error)
    return status == 412 or code == "PreconditionFailed"


def endpointURL(regionendpoint: str | None, secure: bool) -> str | None:
    """
    The endpoint URL for boto3 from zot's C{regionendpoint}, which may be a
    URL or a bare C{host:port} (then C{secure} picks the scheme); L{None}
    for AWS's own endpoints.
    """
    if not regionendpoint:
        return None
    if "://" in regionendpoint:
        return regionendpoint.rstrip("/")
    scheme = "https" if secure else "http"
    return f"{scheme}://{regionendpoint.rstrip('/')}"


class BlockingObjects:
    """
    The blocking S3 calls on one bucket; only ever call them in a pool
    thread.  A boto3 client is thread-safe, so one serves every thread.
    """

    def __init__(
        self,
        endpoint: str | None,
        bucket: str,
        accessKey: str | None = None,
        secretKey: str | None = None,
        region: str = "us-east-1",
        secure: bool = True,
        skipverify: bool = False,
        forcepathstyle: bool = False,
        maxConnections: int = 32,
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint = endpointURL(endpoint, secure)
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=accessKey or None,
            aws_secret_access_key=secretKey or None,
            region_name=region or "us-east-1",
            verify=not skipverify,
            config=Config(
                s3={
                    "addressing_style": "path" if forcepathstyle else "auto",
                    # Over plain HTTP botocore would otherwise SHA-256 every
                    # part a second time to sign it, which halves upload
                    # speed on a CPU without SHA extensions (256 MiB: 3.8 s
                    # instead of 1.8 s against RGW here).  The registry has
                    # hashed and verified the content itself; integrity in
                    # transit is TLS's job (secure: true), where the SDKs
                    # skip payload signing anyway.
                    "payload_signing_enabled": False,
                },
                signature_version="s3v4",
                max_pool_connections=maxConnections,
                retries={"max_attempts": 4, "mode": "standard"},
                # The registry verifies every blob's digest itself; CRC32
                # headers on each part would cost CPU for nothing.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=10,
                read_timeout=120,
            ),
        )
        from botocore.exceptions import ClientError

        self._ClientError = ClientError

    @property
    def client(self):
        """
        The boto3 client (blocking), for calls this class does not wrap.
        """
        return self._client

    def head(self, key: str) -> int | None:
        """
        The object's size, or L{None} when there is none.
        """
        try:
            return self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except self._ClientError as e:
            if _isMissing(e):
                return None
            raise

    def getWithETag(self, key: str) -> tuple[bytes, str] | None:
        """
        A small object's bytes and unquoted ETag, or L{None}.
        """
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
        except self._ClientError as e:
            if _isMissing(e):
                return None
            raise
        with response["Body"] as body:
            return body.read(), _unquote(response.get("ETag"))

    def get(self, key: str) -> bytes | None:
        """
        A small object's bytes, or L{None}.
        """
        found = self.getWithETag(key)
        return None if found is None else found[0]

    def put(
        self, key: str, data: bytes, ifNoneMatch: bool = False, ifMatch: str | None = None
    ) -> str:
        """
        Write a whole object.

        @param ifNoneMatch: only if no object has this key.
        @param ifMatch: only if the object's ETag is this one (unquoted).
        @return: the new object's unquoted ETag.
        @raise PreconditionFailed: if a condition did not hold.
        """
        arguments = {"Bucket": self.bucket, "Key": key, "Body": data}
        if ifNoneMatch:
            arguments["IfNoneMatch"] = "*"
        if ifMatch is not None:
            arguments["IfMatch"] = _unquote(ifMatch)
        try:
            return _unquote(self._client.put_object(**arguments).get("ETag"))
        except self._ClientError as e:
            if _isPrecondition(e):
                raise PreconditionFailed(key) from e
            if ifMatch is not None and _isMissing(e):
                raise PreconditionFailed(key) from e
            raise

    def delete(self, key: str) -> None:
        """
        Delete an object (no error when there is none).
        """
        self._client.delete_object(Bucket=self.bucket, Key=key)

    def deleteMany(self, keys: Iterable[str]) -> None:
        """
        Delete objects, a thousand per request.
        """
        batch: list[str] = []

        def flush():
            if batch:
                self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
                batch.clear()

        for key in keys:
            batch.append(key)
            if len(batch) == 1000:
                flush()
        flush()

    def copy(self, source: str, target: str, size: int | None = None) -> None:
        """
        Copy an object inside the bucket on the server (no bytes through
        this process): one CopyObject up to 5 GiB, else a multipart copy.

        @param size: the source's size when known (saves a HEAD for large
            objects).
        @raise KeyError: when the source does not exist.
        """
        source_ = {"Bucket": self.bucket, "Key": source}
        try:
            if size is None:
                size = self.head(source)
                if size is None:
                    raise KeyError(source)
            if size <= COPY_LIMIT:
                self._client.copy_object(Bucket=self.bucket, Key=target, CopySource=source_)
                return
            mpu = self.createMultipart(target)
            try:
                parts = []
                for n, start in enumerate(range(0, size, COPY_PART), 1):
                    end = min(start + COPY_PART, size) - 1
                    response = self._client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=target,
                        UploadId=mpu,
                        PartNumber=n,
                        CopySource=source_,
                        CopySourceRange=f"bytes={start}-{end}",
                    )
                    parts.append((n, _unquote(response["CopyPartResult"]["ETag"])))
                self.completeMultipart(target, mpu, parts)
            except BaseException:
                self.abortMultipart(target, mpu)
                raise
        except self._ClientError as e:
            if _isMissing(e):
                raise KeyError(source) from e
            raise

    def listPage(
        self, prefix: str, delimiter: str | None = None, token: str | None = None
    ) -> tuple[Listing, str | None]:
        """
        One page (up to 1000 entries) of the keys under C{prefix}.

        @return: the page and the token of the next one (L{None} at the end).
        """
        arguments = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            arguments["Delimiter"] = delimiter
        if token:
            arguments["ContinuationToken"] = token
        response = self._client.list_objects_v2(**arguments)
        objects = [
            ObjectInfo(
                item["Key"],
                int(item["Size"]),
                item["LastModified"].timestamp(),
                _unquote(item.get("ETag")),
            )
            for item in response.get("Contents", [])
        ]
        prefixes = [item["Prefix"] for item in response.get("CommonPrefixes", [])]
        following = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return Listing(objects, prefixes), following

    def list(self, prefix: str, delimiter: str | None = None) -> Listing:
        """
        Every key under C{prefix} (all pages).
        """
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        token = None
        while True:
            page, token = self.listPage(prefix, delimiter, token)
            objects.extend(page.objects)
            prefixes.extend(page.prefixes)
            if token is None:
                return Listing(objects, prefixes)

    def createMultipart(self, key: str) -> str:
        """
        Start a multipart upload to C{key}.  @return: its UploadId.
        """
        return self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

    def uploadPart(self, key: str, uploadID: str, number: int, data) -> str:
        """
        Send one part (at least 5 MiB unless it is the last).

        @return: its unquoted ETag.
        """
        response = self._client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=uploadID, PartNumber=number, Body=data
        )
        return _unquote(response["ETag"])

    def completeMultipart(self, key: str, uploadID: str, parts) -> str:
        """
        Join the parts, C{[(number, etag), ...]} in order, into the object.

        @return: the object's unquoted ETag.
        """
        response = self._client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=uploadID,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag, *_ in parts]
            },
        )
        return _unquote(response.get("ETag"))

    def abortMultipart(self, key: str, uploadID: str) -> None:
        """
        Discard a multipart upload and its parts (no error when it is gone).
        """
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=uploadID)
        except self._ClientError as e:
            code, status = _code(e)
            if status != 404 and code != "NoSuchUpload":
                raise

    def listMultipart(self, prefix: str) -> list[MultipartInfo]:
        """
        The unfinished multipart uploads to keys under C{prefix}.
        """
        found = []
        arguments = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            response = self._client.list_multipart_uploads(**arguments)
            for item in response.get("Uploads", []):
                found.append(
                    MultipartInfo(item["Key"], item["UploadId"], item["Initiated"].timestamp())
                )
            if not response.get("IsTruncated"):
                return found
            arguments["KeyMarker"] = response.get("NextKeyMarker", "")
            arguments["UploadIdMarker"] = response.get("NextUploadIdMarker", "")

    def openStream(self, key: str, start: int, end: int | None = None):
        """
        Start one GET of bytes C{start} to C{end} (inclusive; L{None}: to the
        end) and return its body stream.

        @raise KeyError: when there is no such object.
        """
        byteRange = f"bytes={start}-" if end is None else f"bytes={start}-{end}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key, Range=byteRange)
        except self._ClientError as e:
            if _isMissing(e):
                raise KeyError(key) from e
            raise
        return response["Body"]

    def presign(self, key: str, expires: int = 600) -> str:
        """
        A URL anyone holding it can GET the object with, for C{expires}
        seconds (for C{redirectBlobURL}).
        """
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
        )


class RangeReader:
    """
    The body of one ranged GET, read in pieces in the thread pool.

    @ivar position: the object offset the next L{read} returns bytes from.
    """

    def __init__(self, runner, stream, start: int):
        self._runner = runner
        self._stream = stream
        self.position = start

    def read(self, size: int = READ_SIZE) -> Deferred:
        """
        @return: a L{Deferred} firing with up to C{size} further bytes
            (C{b""} at the end of the range).
        """
        d = self._runner.run(self._read, size)
        return d

    def _read(self, size: int) -> bytes:
        data = self._stream.read(size)
        self.position += len(data)
        return data

    def close(self) -> None:
        """
        Drop the connection behind the GET (in the pool: closing a socket
        with unread data may block briefly).
        """
        stream, self._stream = self._stream, None
        if stream is not None:
            self._runner.run(stream.close)



def driverFlag(value, default: bool) -> bool:
    """
    A boolean key of C{storageDriver}: zot's configs write them as JSON
    booleans or as strings (C{"false"} must not count as true).
    """
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class ObjectStore:
    """
    L{BlockingObjects}'s calls run in a thread pool, as L{Deferred}s.

    @ivar blocking: the L{BlockingObjects}, for code already in a pool thread.
    @ivar runner: the L{zotwist.threads.IBlockingRunner} the calls run in.
    @ivar bucket: the bucket's name.
    """

    def __init__(
        self,
        runner,
        endpoint: str | None,
        bucket: str,
        accessKey: str | None = None,
        secretKey: str | None = None,
        region: str = "us-east-1",
        secure: bool = True,
        skipverify: bool = False,
        forcepathstyle: bool = False,
    ):
        self.runner = runner
        self.blocking = BlockingObjects(
            endpoint, bucket, accessKey, secretKey, region, secure, skipverify, forcepathstyle
        )
        self.bucket = bucket

    @classmethod
    def fromDriverConfig(cls, driver: dict, runner) -> "ObjectStore":
        """
        Build from zot's C{storageDriver} section (keys compared without
        case, as zot does: C{regionendpoint}, C{bucket}, C{region},
        C{accesskey}, C{secretkey}, C{secure}, C{skipverify},
        C{forcepathstyle}).
        """
        folded = {str(k).lower(): v for k, v in driver.items()}
        return cls(
            runner,
            folded.get("regionendpoint"),
            folded["bucket"],
            folded.get("accesskey"),
            folded.get("secretkey"),
            folded.get("region") or "us-east-1",
            driverFlag(folded.get("secure"), True),
            driverFlag(folded.get("skipverify"), False),
            driverFlag(folded.get("forcepathstyle"), False),
        )

    def head(self, key: str) -> Deferred:
        return self.runner.run(self.blocking.head, key)

    def get(self, key: str) -> Deferred:
        return self.runner.run(self.blocking.get, key)

    def getWithETag(self, key: str) -> Deferred:
        return self.runner.run(self.blocking.getWithETag, key)

    def put(
        self, key: str, data: bytes, ifNoneMatch: bool = False, ifMatch: str | None = None
    ) -> Deferred:
        return self.runner.run(self.blocking.put, key, data, ifNoneMatch, ifMatch)

    def delete(self, key: str) -> Deferred:
        return self.runner.run(self.blocking.delete, key)

    def deleteMany(self, keys) -> Deferred:
        return self.runner.run(self.blocking.deleteMany, list(keys))

    def copy(self, source: str, target: str, size: int | None = None) -> Deferred:
        return self.runner.run(self.blocking.copy, source, target, size)

    def listPage(self, prefix: str, delimiter: str | None = None, token: str | None = None):
        return self.runner.run(self.blocking.listPage, prefix, delimiter, token)

    def list(self, prefix: str, delimiter: str | None = None) -> Deferred:
        return self.runner.run(self.blocking.list, prefix, delimiter)

    def createMultipart(self, key: str) -> Deferred:
        return self.runner.run(self.blocking.createMultipart, key)

    def uploadPart(self, key: str, uploadID: str, number: int, data) -> Deferred:
        return self.runner.run(self.blocking.uploadPart, key, uploadID, number, data)

    def completeMultipart(self, key: str, uploadID: str, parts) -> Deferred:
        return self.runner.run(self.blocking.completeMultipart, key, uploadID, parts)

    def abortMultipart(self, key: str, uploadID: str) -> Deferred:
        return self.runner.run(self.blocking.abortMultipart, key, uploadID)

    def listMultipart(self, prefix: str) -> Deferred:
        return self.runner.run(self.blocking.listMultipart, prefix)

    async def openRange(self, key: str, start: int, end: int | None = None) -> RangeReader:
        """
        Start one GET of bytes C{start}..C{end} (inclusive; L{None} to the
        end of the object).

        @return: a L{RangeReader}; fails with L{KeyError} if there is no
            such object.
        """
        stream = await self.runner.run(self.blocking.openStream, key, start, end)
        return RangeReader(self.runner, stream, start)

    def presign(self, key: str, expires: int = 600) -> Deferred:
        return self.runner.run(self.blocking.presign, key, expires)
