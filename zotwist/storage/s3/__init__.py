"""
The S3 storage driver: the same OCI image layout as the local store, as
object keys in a bucket, with the state several instances share (upload
sessions, the catalog, the dedupe index, locks) in Redis.

C{objects} wraps boto3 (blocking, so always in a thread pool), C{hashing}
keeps a digest's state as bytes so an upload can move between processes,
C{uploads} streams request bodies into multipart uploads, C{blobs} serves
and publishes blobs.
"""
