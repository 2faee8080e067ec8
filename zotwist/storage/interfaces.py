"""
The storage interface the web layer talks to.

The HTTP resources never touch files: they ask an L{IRegistryStore}.  The
local-disk implementation (L{zotwist.storage.local.LocalStore}) keeps every
repository as an OCI image layout; an object-store backend implements the
same interface without any change to the web layer.

Every method that may block returns a L{Deferred}.  Failures a client caused
are L{zotwist.errors.RegistryError}s carrying the spec's error code.
"""

from zope.interface import Attribute, Interface


class IUploadWriter(Interface):
    """
    Receives the body of one upload request as it arrives from the network,
    writes it to storage behind the reactor's back and hashes it on the way.

    Installed as the request's C{content} (see L{zotwist.web.request}), so it
    also offers the small file-like surface Twisted calls: C{write},
    C{tell}, C{seek}, C{read}, C{close}.
    """

    rejection = Attribute(
        "A RegistryError decided before the body arrived (for example a "
        "Content-Range that does not continue the session), or None. When "
        "set, the body is read and discarded."
    )

    def write(data: bytes) -> None:
        """
        Queue C{data} for writing; pauses the producer when too much queues up.
        """

    def flushed():
        """
        @return: a L{Deferred} firing once everything written so far is on
            disk (or failing with the write error).
        """

    def close() -> None:
        """
        The request is over.  Data that was never committed is discarded
        (fresh uploads) or kept as the session's progress (appends).
        """


class IRegistryStore(Interface):
    """
    Repositories, blobs, manifests, tags and upload sessions.
    """

    def startService():
        """
        Prepare the store (scan the root, build caches).  @return: Deferred.
        """

    # -- repositories -----------------------------------------------------

    def catalog():
        """
        @return: Deferred firing with the sorted list of repository names.
        """

    def repositoryExists(name):
        """
        @return: Deferred firing with whether C{name} holds a layout.
        """

    # -- blobs ------------------------------------------------------------

    def statBlob(name, digest):
        """
        @return: Deferred firing with the blob's size, or L{None} when the
            repository does not hold it.
        """

    def openBlob(name, digest):
        """
        @return: Deferred firing with an L{IBlobReader}; fails with
            C{BLOB_UNKNOWN}.
        """

    def deleteBlob(name, digest):
        """
        Remove a blob from a repository.  @return: Deferred; fails with
        C{BLOB_UNKNOWN}.
        """

    def mountBlob(name, digest, fromName, mayRead):
        """
        Make a blob held by another repository (C{fromName}, or any
        repository when L{None}) available in C{name}.  C{mayRead}, when not
        L{None}, is a predicate on repository names: only those it accepts
        are sources (the caller's read permission).

        @return: Deferred firing with the size when mounted, L{None} when the
            blob was not found.
        """

    # -- uploads ----------------------------------------------------------

    def startUpload(name, algorithm):
        """
        Open an upload session.  @return: Deferred firing with its id.
        """

    def uploadStatus(name, uploadID):
        """
        @return: Deferred firing with the number of bytes received so far;
            fails with C{BLOB_UPLOAD_UNKNOWN}.
        """

    def cancelUpload(name, uploadID):
        """
        Discard a session.  @return: Deferred; fails with C{BLOB_UPLOAD_UNKNOWN}.
        """

    def writerForSession(name, uploadID, start, length):
        """
        Called before a PATCH or closing PUT's body arrives.

        @param start: the first byte offset the client claims (from
            Content-Range), or L{None} to append.
        @param length: the announced body length, or L{None}.
        @return: an L{IUploadWriter} appending to the session (synchronous:
            the body is about to arrive).
        """

    def writerForMonolithic(name, algorithm, length):
        """
        Called before the body of a single-request upload (POST C{?digest=})
        arrives.  @return: an L{IUploadWriter} into a fresh temporary file.
        """

    def completeUpload(name, uploadID, digest, writer):
        """
        Verify the session's whole content against C{digest} and publish it
        under that digest.  C{writer} is the closing request's writer, or None.

        @return: Deferred firing with the blob size; fails with
            C{DIGEST_INVALID} (content left as it was) or C{BLOB_UPLOAD_UNKNOWN}.
        """

    def commitMonolithic(name, digest, writer):
        """
        Verify and publish the body received by C{writer}.

        @return: Deferred firing with the blob size; fails with
            C{DIGEST_INVALID}.
        """

    # -- manifests and tags -------------------------------------------------

    def getManifest(name, reference):
        """
        @return: Deferred firing with C{(body, mediaType, digest)}; fails with
            C{NAME_UNKNOWN} or C{MANIFEST_UNKNOWN}.
        """

    def statManifest(name, reference):
        """
        @return: Deferred firing with C{(size, mediaType, digest)}.
        """

    def putManifest(name, body, contentType, reference, tags):
        """
        Validate and store a manifest, and point C{tags} at it.

        @param reference: the tag or digest from the URL.
        @param tags: further tags (end-7b's C{?tag=}).
        @return: Deferred firing with its L{zotwist.manifests.ManifestInfo}.
        """

    def deleteManifest(name, reference):
        """
        Delete a tag (the manifest stays, untagged) or, by digest, the
        manifest and every tag pointing at it.  @return: Deferred.
        """

    def listTags(name):
        """
        @return: Deferred firing with the sorted tags; fails with C{NAME_UNKNOWN}.
        """

    def referrers(name, digest):
        """
        @return: Deferred firing with the L{ManifestInfo}s whose subject is
            C{digest} (empty for an unknown repository).
        """


class IBlobReader(Interface):
    """
    An open blob: its size and positional reads.
    """

    size = Attribute("The blob's length in bytes.")

    def read(offset, length):
        """
        @return: Deferred firing with up to C{length} bytes from C{offset}.
        """

    def close():
        """
        Release the underlying file.
        """
