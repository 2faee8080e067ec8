"""
Tests for L{zotwist.storage.local.LocalStore}: repositories as OCI image
layouts under one root.

Most tests run the store with an L{InlineRunner}, so every operation
completes synchronously; L{ThreadedStoreTests} runs it on a real thread pool.
"""

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from zotwist import oci
from zotwist.errors import ManifestBlobsUnknown, RegistryError
from zotwist.storage import journal
from zotwist.storage.interfaces import IBlobReader, IRegistryStore
from zotwist.storage.local import LocalStore
from zotwist.threads import InlineRunner, ThreadPoolRunner

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
UNKNOWN_UPLOAD = "0123456789abcdef0123456789abcdef"


def descriptorOf(mediaType: str, data: bytes, algorithm: str = "sha256") -> dict:
    """
    The descriptor of C{data}.
    """
    return {"mediaType": mediaType, "digest": oci.digestOf(data, algorithm), "size": len(data)}


def imageManifest(config: bytes, layers: list, configType: str = CONFIG_TYPE,
                  mediaType: str = oci.OCI_MANIFEST, **extra) -> bytes:
    """
    The body of an image manifest for the given config and layer contents.
    """
    document = {
        "schemaVersion": 2,
        "mediaType": mediaType,
        "config": descriptorOf(configType, config),
        "layers": [descriptorOf(LAYER_TYPE, layer) for layer in layers],
    }
    document.update(extra)
    return json.dumps(document).encode()


def indexManifest(children: list, **extra) -> bytes:
    """
    The body of an OCI index listing C{children} (manifest bodies).
    """
    document = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [descriptorOf(oci.OCI_MANIFEST, child) for child in children],
    }
    document.update(extra)
    return json.dumps(document).encode()


class StoreCase(SynchronousTestCase):
    """
    A store on a fresh root C{<parent>/root}, with an inline runner.
    """

    def setUp(self):
        self.parent = os.path.abspath(self.mktemp())
        os.makedirs(self.parent)
        self.root = os.path.join(self.parent, "root")
        self.store = self.makeStore()

    def makeStore(self) -> LocalStore:
        """
        A started store on C{self.root} (as after a restart, when one
        exists already).
        """
        store = LocalStore(self.root, InlineRunner())
        self.result(store.startService())
        return store

    def result(self, coroutine):
        """
        The result of a store coroutine that completed synchronously.
        """
        return self.successResultOf(ensureDeferred(coroutine))

    def registryFailure(self, coroutine, code: str) -> RegistryError:
        """
        Assert that a store coroutine failed with a L{RegistryError} of
        C{code}; return it.
        """
        failure = self.failureResultOf(ensureDeferred(coroutine), RegistryError)
        self.assertEqual(failure.value.code, code)
        return failure.value

    def pushBlob(self, name: str, data: bytes, algorithm: str = "sha256", store=None) -> str:
        """
        Upload C{data} monolithically; return its digest.
        """
        store = store or self.store
        digest = oci.digestOf(data, algorithm)
        writer = store.writerForMonolithic(name, algorithm, len(data))
        writer.write(data)
        self.assertEqual(self.result(store.commitMonolithic(name, digest, writer)), len(data))
        writer.close()
        return digest

    def pushImage(self, name: str, reference: str | None, layers=(b"layer",), config=b"{}",
                  tags=(), store=None, **extra):
        """
        Push an image's blobs and manifest; return C{(body, digest)}.
        """
        store = store or self.store
        for blob in (config, *layers):
            self.pushBlob(name, blob, store=store)
        body = imageManifest(config, list(layers), **extra)
        digest = oci.digestOf(body)
        info = self.result(store.putManifest(
            name, body, oci.OCI_MANIFEST, reference if reference is not None else digest,
            list(tags),
        ))
        self.assertEqual(info.digest, digest)
        return body, digest

    def startSession(self, name: str, algorithm: str = "sha256") -> str:
        """
        Open an upload session.
        """
        return self.result(self.store.startUpload(name, algorithm))

    def patch(self, name: str, uploadID: str, data: bytes, start=None, store=None) -> None:
        """
        Append a chunk as a PATCH request would: writer, body, flush, close.
        """
        store = store or self.store
        writer = store.writerForSession(name, uploadID, start, len(data))
        self.assertIsNone(writer.rejection)
        writer.write(data)
        self.result(writer.flushed())
        writer.close()

    def repoPath(self, name: str, *parts: str) -> str:
        """
        A path inside a repository's layout.
        """
        return os.path.join(self.root, *name.split("/"), *parts)

    def readIndex(self, name: str) -> dict:
        """
        The repository's C{index.json}, as read from disk.
        """
        with open(self.repoPath(name, "index.json"), "rb") as f:
            return json.loads(f.read())

    def makeLayout(self, name: str, manifests=()) -> None:
        """
        Write a layout by hand, as another tool would.
        """
        directory = self.repoPath(name)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion": "1.0.0"}')
        with open(os.path.join(directory, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": list(manifests)}, f)


class StartTests(StoreCase):
    """
    Starting the store and finding the repositories already on disk.
    """

    def test_interface(self):
        """
        The store provides L{IRegistryStore}.
        """
        self.assertTrue(verifyObject(IRegistryStore, self.store))

    def test_emptyRoot(self):
        """
        A missing root is created and holds no repository.
        """
        self.assertTrue(os.path.isdir(self.root))
        self.assertEqual(self.result(self.store.catalog()), [])
        self.assertFalse(self.result(self.store.repositoryExists("a")))

    def test_existingLayouts(self):
        """
        The start-up scan finds every layout, nested ones included, and
        skips directories that are not layouts, have invalid names, or are
        a layout's own blobs and upload areas.
        """
        for name in ["a", "a/b", "c/d/e", "library/ubuntu"]:
            self.makeLayout(name)
        os.makedirs(self.repoPath("x", "y"))
        self.makeLayout("Bad")
        self.makeLayout("a/.uploads/u")
        self.makeLayout("a/blobs/sha256")
        os.makedirs(self.repoPath("onlyindex"))
        with open(self.repoPath("onlyindex", "index.json"), "w") as f:
            f.write("{}")
        store = self.makeStore()
        self.assertEqual(self.result(store.catalog()), ["a", "a/b", "c/d/e", "library/ubuntu"])
        self.assertTrue(self.result(store.repositoryExists("a/b")))
        self.assertFalse(self.result(store.repositoryExists("x")))

    def test_restartKeepsEverything(self):
        """
        A new store on the same root finds the repositories, tags and blobs
        of the previous one.
        """
        self.pushImage("a", "v1")
        _, digest = self.pushImage("a/b", "v2")
        store = self.makeStore()
        self.assertEqual(self.result(store.catalog()), ["a", "a/b"])
        self.assertEqual(self.result(store.listTags("a/b")), ["v2"])
        self.assertEqual(self.result(store.getManifest("a/b", "v2"))[2], digest)

    def test_restartFindsRepositoryNamedBlobs(self):
        """
        C{blobs} is a valid first name component (only nested components
        are reserved), so a repository of that name is found again after a
        restart, like any other.
        """
        oci.validateName("blobs")
        oci.validateName("blobs/x")
        self.pushImage("blobs", "v1")
        self.pushImage("blobs/x", "v1")
        self.assertEqual(self.result(self.store.catalog()), ["blobs", "blobs/x"])
        store = self.makeStore()
        self.assertEqual(self.result(store.catalog()), ["blobs", "blobs/x"])

    def test_unreadableIndex(self):
        """
        A corrupt C{index.json} is read as an empty index (and logged), not
        a crash.
        """
        self.makeLayout("a")
        with open(self.repoPath("a", "index.json"), "w") as f:
            f.write("{not json")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertEqual(self.result(self.store.listTags("a")), [])
        self.assertEqual([e["log_level"] for e in events], [LogLevel.error])


class BlobTests(StoreCase):
    """
    Blobs: monolithic uploads, reads, deletes and mounts.
    """

    def test_monolithic(self):
        """
        A monolithic upload lands under C{blobs/<alg>/<hex>} of a valid
        layout, and the temporary directory is gone.
        """
        digest = self.pushBlob("a/b", b"hello")
        path = self.repoPath("a/b", "blobs", "sha256", digest.split(":")[1])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"hello")
        self.assertTrue(os.path.isfile(self.repoPath("a/b", "oci-layout")))
        self.assertEqual(os.listdir(self.repoPath("a/b", ".uploads")), [])
        self.assertEqual(self.result(self.store.statBlob("a/b", digest)), 5)
        self.assertEqual(self.result(self.store.catalog()), ["a/b"])

    def test_monolithicSha512(self):
        """
        sha512 blobs go to C{blobs/sha512}.
        """
        digest = self.pushBlob("a", b"x" * 1000, "sha512")
        self.assertTrue(os.path.isfile(self.repoPath("a", "blobs", "sha512", digest[7:])))

    def test_monolithicWrongDigest(self):
        """
        A body that does not match the digest is C{DIGEST_INVALID}; nothing
        is published and closing the writer removes the body.
        """
        writer = self.store.writerForMonolithic("a", "sha256", 5)
        writer.write(b"hello")
        wrong = oci.digestOf(b"other")
        self.registryFailure(self.store.commitMonolithic("a", wrong, writer), "DIGEST_INVALID")
        writer.close()
        self.assertIsNone(self.result(self.store.statBlob("a", wrong)))
        self.assertIsNone(self.result(self.store.statBlob("a", oci.digestOf(b"hello"))))
        self.assertEqual(os.listdir(self.repoPath("a", ".uploads")), [])

    def test_emptyBlob(self):
        """
        A zero-byte blob is a blob like any other.
        """
        digest = self.pushBlob("a", b"")
        self.assertEqual(self.result(self.store.statBlob("a", digest)), 0)

    def test_openAndRead(self):
        """
        L{LocalStore.openBlob} gives an L{IBlobReader} with positional reads.
        """
        data = bytes(range(200))
        digest = self.pushBlob("a", data)
        reader = self.result(self.store.openBlob("a", digest))
        self.assertTrue(verifyObject(IBlobReader, reader))
        self.assertEqual(reader.size, 200)
        self.assertEqual(self.successResultOf(reader.read(10, 5)), data[10:15])
        self.assertEqual(self.successResultOf(reader.read(190, 100)), data[190:])
        reader.close()
        reader.close()

    def test_unknownBlob(self):
        """
        A blob the repository does not hold: L{None} from stat,
        C{BLOB_UNKNOWN} from open and delete.
        """
        digest = self.pushBlob("a", b"x")
        self.assertIsNone(self.result(self.store.statBlob("b", digest)))
        self.registryFailure(self.store.openBlob("b", digest), "BLOB_UNKNOWN")
        self.registryFailure(self.store.deleteBlob("b", digest), "BLOB_UNKNOWN")

    def test_delete(self):
        """
        A deleted blob is gone; a second delete is C{BLOB_UNKNOWN}.
        """
        digest = self.pushBlob("a", b"x")
        self.result(self.store.deleteBlob("a", digest))
        self.assertIsNone(self.result(self.store.statBlob("a", digest)))
        self.registryFailure(self.store.deleteBlob("a", digest), "BLOB_UNKNOWN")

    def test_mountFromNamed(self):
        """
        Mounting from a named repository makes the blob available as a
        hard link of the same file, in a new valid layout.
        """
        digest = self.pushBlob("src", b"shared")
        self.assertEqual(self.result(self.store.mountBlob("dst/x", digest, "src")), 6)
        self.assertEqual(self.result(self.store.statBlob("dst/x", digest)), 6)
        source = self.repoPath("src", "blobs", "sha256", digest[7:])
        target = self.repoPath("dst/x", "blobs", "sha256", digest[7:])
        self.assertEqual(os.stat(source).st_ino, os.stat(target).st_ino)
        self.assertTrue(os.path.isfile(self.repoPath("dst/x", "index.json")))
        self.assertIn("dst/x", self.result(self.store.catalog()))
        self.assertEqual([n for n in os.listdir(os.path.dirname(target))], [digest[7:]])

    def test_mountFromAnywhere(self):
        """
        Without C{from}, any repository holding the blob is a source.
        """
        self.pushBlob("other", b"o")
        digest = self.pushBlob("src/deep", b"shared")
        self.assertEqual(self.result(self.store.mountBlob("dst", digest, None)), 6)
        source = self.repoPath("src/deep", "blobs", "sha256", digest[7:])
        target = self.repoPath("dst", "blobs", "sha256", digest[7:])
        self.assertEqual(os.stat(source).st_ino, os.stat(target).st_ino)

    def test_mountNotFound(self):
        """
        A blob nobody (or not the named repository) holds is not mounted
        (L{None}), and no layout is created for the target.
        """
        digest = self.pushBlob("src", b"shared")
        self.assertIsNone(self.result(self.store.mountBlob("dst", digest, "elsewhere")))
        self.assertIsNone(self.result(self.store.mountBlob("dst", oci.digestOf(b"no"), None)))
        self.assertFalse(os.path.exists(self.repoPath("dst")))
        self.assertEqual(self.result(self.store.catalog()), ["src"])

    def test_mountExisting(self):
        """
        Mounting a blob the repository already holds answers its size.
        """
        digest = self.pushBlob("a", b"abc")
        self.assertEqual(self.result(self.store.mountBlob("a", digest, "a")), 3)
        self.assertEqual(self.result(self.store.mountBlob("a", digest, None)), 3)


class UploadTests(StoreCase):
    """
    Upload sessions: start, append, complete, cancel.
    """

    def test_roundTrip(self):
        """
        Chunks appended to a session become a blob when completed with the
        right digest; the session is then gone.
        """
        uploadID = self.startSession("a/b")
        self.assertEqual(self.result(self.store.uploadStatus("a/b", uploadID)), 0)
        self.patch("a/b", uploadID, b"hello ", start=0)
        self.assertEqual(self.result(self.store.uploadStatus("a/b", uploadID)), 6)
        writer = self.store.writerForSession("a/b", uploadID, 6, 5)
        writer.write(b"world")
        digest = oci.digestOf(b"hello world")
        self.assertEqual(self.result(self.store.completeUpload("a/b", uploadID, digest, writer)),
                         11)
        writer.close()
        self.assertEqual(self.result(self.store.statBlob("a/b", digest)), 11)
        reader = self.result(self.store.openBlob("a/b", digest))
        self.assertEqual(self.successResultOf(reader.read(0, 100)), b"hello world")
        reader.close()
        self.registryFailure(self.store.uploadStatus("a/b", uploadID), "BLOB_UPLOAD_UNKNOWN")
        self.assertFalse(os.path.exists(self.repoPath("a/b", ".uploads", uploadID)))
        self.assertEqual(self.result(self.store.catalog()), ["a/b"])

    def test_completeWithoutBody(self):
        """
        A closing PUT without body (writer L{None}) completes the session.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc")
        digest = oci.digestOf(b"abc")
        self.assertEqual(self.result(self.store.completeUpload("a", uploadID, digest, None)), 3)
        self.assertEqual(self.result(self.store.statBlob("a", digest)), 3)

    def test_emptySession(self):
        """
        A session completed with no byte at all is the empty blob.
        """
        uploadID = self.startSession("a")
        digest = oci.digestOf(b"")
        self.assertEqual(self.result(self.store.completeUpload("a", uploadID, digest, None)), 0)

    def test_wrongDigest(self):
        """
        The wrong digest is C{DIGEST_INVALID}; the session keeps its bytes
        and can still be completed with the right one.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc")
        writer = self.store.writerForSession("a", uploadID, 3, 3)
        writer.write(b"def")
        wrong = oci.digestOf(b"abcdeX")
        error = self.registryFailure(
            self.store.completeUpload("a", uploadID, wrong, writer), "DIGEST_INVALID"
        )
        self.assertEqual(error.status, 400)
        writer.close()
        self.assertIsNone(self.result(self.store.statBlob("a", wrong)))
        self.assertEqual(self.result(self.store.uploadStatus("a", uploadID)), 6)
        right = oci.digestOf(b"abcdef")
        self.assertEqual(self.result(self.store.completeUpload("a", uploadID, right, None)), 6)
        self.assertEqual(self.result(self.store.statBlob("a", right)), 6)

    def test_rejectedWriter(self):
        """
        A closing PUT whose chunk was refused (wrong start) answers that
        refusal and leaves the session as it was.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc")
        writer = self.store.writerForSession("a", uploadID, 10, 3)
        writer.write(b"def")
        digest = oci.digestOf(b"abcdef")
        error = self.registryFailure(
            self.store.completeUpload("a", uploadID, digest, writer), "BLOB_UPLOAD_INVALID"
        )
        self.assertEqual(error.status, 416)
        writer.close()
        self.assertEqual(self.result(self.store.uploadStatus("a", uploadID)), 3)

    def test_sha512Session(self):
        """
        A sha512 session produces a sha512 blob.
        """
        uploadID = self.startSession("a", "sha512")
        self.patch("a", uploadID, b"x" * 5000)
        self.patch("a", uploadID, b"y" * 10)
        digest = oci.digestOf(b"x" * 5000 + b"y" * 10, "sha512")
        self.assertEqual(self.result(self.store.completeUpload("a", uploadID, digest, None)), 5010)
        self.assertTrue(os.path.isfile(self.repoPath("a", "blobs", "sha512", digest[7:])))

    def test_otherAlgorithmAtCompletion(self):
        """
        Completing a sha256 session with a sha512 digest hashes the file
        again with sha512.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"data")
        digest = oci.digestOf(b"data", "sha512")
        self.assertEqual(self.result(self.store.completeUpload("a", uploadID, digest, None)), 4)

    def test_unsupportedAlgorithm(self):
        """
        A session for an unsupported algorithm is C{DIGEST_INVALID}.
        """
        self.registryFailure(self.store.startUpload("a", "md5"), "DIGEST_INVALID")
        self.assertRaises(RegistryError, self.store.writerForMonolithic, "a", "md5", 1)

    def test_outOfOrderChunk(self):
        """
        A chunk that does not start where the session ends is refused with
        416 and a C{Range} header; the session is unchanged.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc", start=0)
        writer = self.store.writerForSession("a", uploadID, 5, 3)
        self.assertEqual(writer.rejection.status, 416)
        self.assertEqual(writer.rejection.headers, {"Range": "0-2"})
        writer.write(b"xyz")
        writer.close()
        self.assertEqual(self.result(self.store.uploadStatus("a", uploadID)), 3)

    def test_cancel(self):
        """
        A cancelled session is gone, with its directory.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc")
        self.result(self.store.cancelUpload("a", uploadID))
        self.assertFalse(os.path.exists(self.repoPath("a", ".uploads", uploadID)))
        self.registryFailure(self.store.uploadStatus("a", uploadID), "BLOB_UPLOAD_UNKNOWN")
        self.registryFailure(self.store.cancelUpload("a", uploadID), "BLOB_UPLOAD_UNKNOWN")
        self.assertRaises(RegistryError, self.store.writerForSession, "a", uploadID, None, 1)

    def test_sessionBelongsToItsRepository(self):
        """
        A session is not reachable under another repository's name.
        """
        uploadID = self.startSession("a")
        self.registryFailure(self.store.uploadStatus("b", uploadID), "BLOB_UPLOAD_UNKNOWN")
        self.registryFailure(self.store.cancelUpload("b", uploadID), "BLOB_UPLOAD_UNKNOWN")
        self.assertEqual(self.result(self.store.uploadStatus("a", uploadID)), 0)

    def test_sessionUsableAfterProbeUnderAnotherName(self):
        """
        Asking for a session under the wrong repository name does not break
        the session: its next chunk is appended and its digest is right.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc")
        self.registryFailure(self.store.uploadStatus("b", uploadID), "BLOB_UPLOAD_UNKNOWN")
        self.patch("a", uploadID, b"def", start=3)
        digest = oci.digestOf(b"abcdef")
        self.assertEqual(self.result(self.store.completeUpload("a", uploadID, digest, None)), 6)

    def test_sessionSurvivesRestart(self):
        """
        After a restart, a session's bytes are still there and completing it
        without a writer rebuilds the hash from the file.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc")
        store = self.makeStore()
        self.assertEqual(self.result(store.uploadStatus("a", uploadID)), 3)
        digest = oci.digestOf(b"abc")
        self.assertEqual(self.result(store.completeUpload("a", uploadID, digest, None)), 3)

    def test_closingPutAfterRestart(self):
        """
        After a restart (or in another worker process), a closing PUT with
        an empty body, which gets a session writer as the web layer always
        gives it one, completes the session.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc")
        store = self.makeStore()
        writer = store.writerForSession("a", uploadID, None, 0)
        self.assertIsNone(writer.rejection)
        digest = oci.digestOf(b"abc")
        self.assertEqual(self.result(store.completeUpload("a", uploadID, digest, writer)), 3)
        writer.close()

    def test_sessionContinuesAfterRestart(self):
        """
        After a restart (or when another process appended the earlier
        chunks), the next chunk is appended and the session's hash catches
        up with the bytes it had not seen.
        """
        uploadID = self.startSession("a")
        self.patch("a", uploadID, b"abc")
        store = self.makeStore()
        self.patch("a", uploadID, b"def", start=3, store=store)
        digest = oci.digestOf(b"abcdef")
        self.assertEqual(self.result(store.completeUpload("a", uploadID, digest, None)), 6)

    def test_sessionLayout(self):
        """
        A session lives in C{<repo>/.uploads/<id>/} with its data file and
        metadata.
        """
        uploadID = self.startSession("a/b", "sha512")
        directory = self.repoPath("a/b", ".uploads", uploadID)
        self.assertEqual(sorted(os.listdir(directory)), ["data", "meta.json"])
        with open(os.path.join(directory, "meta.json")) as f:
            self.assertEqual(json.load(f), {"algorithm": "sha512", "repository": "a/b"})

    def test_noPathOutsideRoot(self):
        """
        Hostile session ids and digests are refused before any path is
        built from them: nothing appears outside the root, and nothing
        outside it is removed.
        """
        self.pushImage("a", "v1")
        escape = os.path.join(self.parent, "escape")
        os.makedirs(escape)
        with open(os.path.join(escape, "meta.json"), "w") as f:
            json.dump({"algorithm": "sha256", "repository": "a"}, f)
        with open(os.path.join(escape, "data"), "w") as f:
            f.write("keep")
        before = sorted(os.listdir(self.parent))
        digest = oci.digestOf(b"x")
        hostileIDs = [
            "../x", "..", ".", "", "../../escape", "../../../escape", escape,
            UNKNOWN_UPLOAD + "/../..", UNKNOWN_UPLOAD + "\n", UNKNOWN_UPLOAD.upper(),
            UNKNOWN_UPLOAD[:-1], "%2e%2e",
        ]
        for uploadID in hostileIDs:
            self.registryFailure(self.store.uploadStatus("a", uploadID), "BLOB_UPLOAD_UNKNOWN")
            self.registryFailure(self.store.cancelUpload("a", uploadID), "BLOB_UPLOAD_UNKNOWN")
            self.registryFailure(
                self.store.completeUpload("a", uploadID, digest, None), "BLOB_UPLOAD_UNKNOWN"
            )
            with self.assertRaises(RegistryError) as caught:
                self.store.writerForSession("a", uploadID, None, 1)
            self.assertEqual(caught.exception.code, "BLOB_UPLOAD_UNKNOWN")
        for bad in ["../x", "sha256:../../x", "sha256:" + "../" * 21 + "a", escape]:
            self.registryFailure(self.store.statBlob("a", bad), "DIGEST_INVALID")
            self.registryFailure(self.store.openBlob("a", bad), "DIGEST_INVALID")
            self.registryFailure(self.store.deleteBlob("a", bad), "DIGEST_INVALID")
            self.registryFailure(self.store.mountBlob("a", bad, None), "DIGEST_INVALID")
            self.registryFailure(self.store.referrers("a", bad), "DIGEST_INVALID")
        for reference in ["../x", "..", escape, "sha256:../x"]:
            code = "DIGEST_INVALID" if ":" in reference else "TAG_INVALID"
            self.registryFailure(self.store.getManifest("a", reference), code)
            self.registryFailure(self.store.statManifest("a", reference), code)
            self.registryFailure(self.store.deleteManifest("a", reference), code)
            self.registryFailure(
                self.store.putManifest("a", b"{}", None, reference, []), code
            )
        self.registryFailure(self.store.startUpload("a", "../x"), "DIGEST_INVALID")
        self.assertRaises(RegistryError, self.store.writerForMonolithic, "a", "../x", 1)
        self.assertEqual(sorted(os.listdir(self.parent)), before)
        self.assertEqual(sorted(os.listdir(escape)), ["data", "meta.json"])
        with open(os.path.join(escape, "data")) as f:
            self.assertEqual(f.read(), "keep")


class ManifestTests(StoreCase):
    """
    Manifests and tags.
    """

    def test_putAndGet(self):
        """
        A pushed manifest is served by tag and by digest with its media
        type, exactly as pushed.
        """
        body, digest = self.pushImage("a/b", "v1")
        self.assertEqual(self.result(self.store.getManifest("a/b", "v1")),
                         (body, oci.OCI_MANIFEST, digest))
        self.assertEqual(self.result(self.store.getManifest("a/b", digest)),
                         (body, oci.OCI_MANIFEST, digest))
        self.assertEqual(self.result(self.store.statManifest("a/b", "v1")),
                         (len(body), oci.OCI_MANIFEST, digest))
        self.assertEqual(self.result(self.store.listTags("a/b")), ["v1"])
        with open(self.repoPath("a/b", "blobs", "sha256", digest[7:]), "rb") as f:
            self.assertEqual(f.read(), body)

    def test_servedAfterRestart(self):
        """
        A new store (empty caches) serves the manifest from disk.
        """
        body, digest = self.pushImage("a", "v1")
        store = self.makeStore()
        self.assertEqual(self.result(store.getManifest("a", "v1")),
                         (body, oci.OCI_MANIFEST, digest))

    def test_dockerMediaType(self):
        """
        A Docker schema 2 manifest keeps its media type.
        """
        config, layer = b'{"docker": true}', b"dl"
        self.pushBlob("a", config)
        self.pushBlob("a", layer)
        body = imageManifest(config, [layer], mediaType=oci.DOCKER_MANIFEST,
                             configType="application/vnd.docker.container.image.v1+json")
        self.result(self.store.putManifest("a", body, oci.DOCKER_MANIFEST, "d", []))
        self.assertEqual(self.result(self.store.getManifest("a", "d"))[1], oci.DOCKER_MANIFEST)

    def test_extraTags(self):
        """
        Extra tags point at the same manifest; duplicates count once.
        """
        _, digest = self.pushImage("a", "v1", tags=["v2", "v1", "v2"])
        self.assertEqual(self.result(self.store.listTags("a")), ["v1", "v2"])
        self.assertEqual(self.result(self.store.getManifest("a", "v2"))[2], digest)
        entries = self.readIndex("a")["manifests"]
        self.assertEqual(len(entries), 2)

    def test_pushByDigest(self):
        """
        A manifest pushed by digest is untagged but listed in the index;
        a wrong digest is C{DIGEST_INVALID}.
        """
        body, digest = self.pushImage("a", None)
        self.assertEqual(self.result(self.store.listTags("a")), [])
        self.assertEqual(self.result(self.store.getManifest("a", digest))[0], body)
        self.assertEqual(
            [m["digest"] for m in self.readIndex("a")["manifests"]], [digest]
        )
        self.registryFailure(
            self.store.putManifest("a", body + b" ", oci.OCI_MANIFEST, digest, []),
            "DIGEST_INVALID",
        )

    def test_pushTwice(self):
        """
        Pushing the same manifest and tag again changes nothing.
        """
        body, _ = self.pushImage("a", "v1")
        before = self.readIndex("a")
        self.result(self.store.putManifest("a", body, oci.OCI_MANIFEST, "v1", []))
        self.assertEqual(self.readIndex("a"), before)

    def test_indexJSONIsOCI(self):
        """
        The repository is a valid OCI image layout: C{oci-layout}, and an
        C{index.json} with C{schemaVersion} 2, the index media type and one
        descriptor per tag carrying the C{ref.name} annotation.
        """
        body1, digest1 = self.pushImage("a", "v1")
        body2, digest2 = self.pushImage("a", "v2", layers=[b"other"])
        with open(self.repoPath("a", "oci-layout"), "rb") as f:
            self.assertEqual(json.loads(f.read()), {"imageLayoutVersion": "1.0.0"})
        index = self.readIndex("a")
        self.assertEqual(index["schemaVersion"], 2)
        self.assertEqual(index["mediaType"], oci.OCI_INDEX)
        self.assertEqual(
            sorted(index["manifests"], key=lambda m: m["annotations"][oci.REF_NAME]),
            [
                {"mediaType": oci.OCI_MANIFEST, "digest": digest1, "size": len(body1),
                 "annotations": {oci.REF_NAME: "v1"}},
                {"mediaType": oci.OCI_MANIFEST, "digest": digest2, "size": len(body2),
                 "annotations": {oci.REF_NAME: "v2"}},
            ],
        )
        for name in os.listdir(self.repoPath("a", "blobs", "sha256")):
            with open(self.repoPath("a", "blobs", "sha256", name), "rb") as f:
                self.assertEqual(oci.digestOf(f.read()), "sha256:" + name)

    def test_moveTag(self):
        """
        Pushing another manifest under a tag moves the tag; the old
        manifest stays, by digest, as an untagged index entry.
        """
        body1, digest1 = self.pushImage("a", "latest")
        _, digest2 = self.pushImage("a", "latest", layers=[b"new"])
        self.assertEqual(self.result(self.store.listTags("a")), ["latest"])
        self.assertEqual(self.result(self.store.getManifest("a", "latest"))[2], digest2)
        self.assertEqual(self.result(self.store.getManifest("a", digest1))[0], body1)
        entries = {m["digest"]: m for m in self.readIndex("a")["manifests"]}
        self.assertEqual(set(entries), {digest1, digest2})
        self.assertNotIn(oci.REF_NAME, entries[digest1].get("annotations", {}))
        self.assertEqual(entries[digest2]["annotations"], {oci.REF_NAME: "latest"})

    def test_deleteByTag(self):
        """
        Deleting a tag removes only the tag: the manifest stays by digest,
        as an untagged entry of the index.
        """
        body, digest = self.pushImage("a", "v1")
        self.result(self.store.deleteManifest("a", "v1"))
        self.assertEqual(self.result(self.store.listTags("a")), [])
        self.registryFailure(self.store.getManifest("a", "v1"), "MANIFEST_UNKNOWN")
        self.assertEqual(self.result(self.store.getManifest("a", digest))[0], body)
        self.assertEqual(
            self.readIndex("a")["manifests"],
            [{"mediaType": oci.OCI_MANIFEST, "digest": digest, "size": len(body)}],
        )
        self.registryFailure(self.store.deleteManifest("a", "v1"), "MANIFEST_UNKNOWN")

    def test_deleteOneOfSeveralTags(self):
        """
        Deleting one of a manifest's tags leaves the others, and no extra
        untagged entry.
        """
        _, digest = self.pushImage("a", "v1", tags=["v2"])
        self.result(self.store.deleteManifest("a", "v1"))
        self.assertEqual(self.result(self.store.listTags("a")), ["v2"])
        self.assertEqual(
            [(m["digest"], m.get("annotations")) for m in self.readIndex("a")["manifests"]],
            [(digest, {oci.REF_NAME: "v2"})],
        )

    def test_deleteByDigest(self):
        """
        Deleting by digest removes the manifest and every tag naming it.
        """
        _, digest = self.pushImage("a", "v1", tags=["v2"])
        _, other = self.pushImage("a", "keep", layers=[b"k"])
        self.result(self.store.deleteManifest("a", digest))
        self.assertEqual(self.result(self.store.listTags("a")), ["keep"])
        self.registryFailure(self.store.getManifest("a", digest), "MANIFEST_UNKNOWN")
        self.registryFailure(self.store.getManifest("a", "v1"), "MANIFEST_UNKNOWN")
        self.registryFailure(self.store.statManifest("a", digest), "MANIFEST_UNKNOWN")
        self.assertEqual([m["digest"] for m in self.readIndex("a")["manifests"]], [other])
        self.registryFailure(self.store.deleteManifest("a", digest), "MANIFEST_UNKNOWN")

    def test_unknown(self):
        """
        Unknown repositories are C{NAME_UNKNOWN}; unknown tags and digests
        in a known one C{MANIFEST_UNKNOWN}.
        """
        self.registryFailure(self.store.listTags("nope"), "NAME_UNKNOWN")
        self.registryFailure(self.store.getManifest("nope", "v1"), "NAME_UNKNOWN")
        self.registryFailure(self.store.statManifest("nope", "v1"), "NAME_UNKNOWN")
        self.registryFailure(self.store.deleteManifest("nope", "v1"), "NAME_UNKNOWN")
        _, digest = self.pushImage("a", "v1")
        self.pushBlob("b", b"x")
        self.registryFailure(self.store.getManifest("a", "v2"), "MANIFEST_UNKNOWN")
        self.registryFailure(self.store.getManifest("b", digest), "MANIFEST_UNKNOWN")
        self.registryFailure(self.store.getManifest("a", oci.digestOf(b"?")), "MANIFEST_UNKNOWN")

    def test_missingBlobs(self):
        """
        A manifest referencing blobs the repository lacks is
        C{MANIFEST_BLOB_UNKNOWN} listing each missing digest; nothing is
        tagged.
        """
        config, layer1, layer2 = b"{}", b"l1", b"l2"
        self.pushBlob("a", layer1)
        body = imageManifest(config, [layer1, layer2])
        failure = self.failureResultOf(
            ensureDeferred(self.store.putManifest("a", body, oci.OCI_MANIFEST, "v1", [])),
            ManifestBlobsUnknown,
        )
        self.assertEqual(failure.value.digests, [oci.digestOf(config), oci.digestOf(layer2)])
        self.assertEqual(len(json.loads(failure.value.body())["errors"]), 2)
        self.assertEqual(self.result(self.store.listTags("a")), [])

    def test_missingBlobsInUnknownRepository(self):
        """
        With nothing pushed at all, every blob is listed and no repository
        appears.
        """
        body = imageManifest(b"c", [b"1", b"2"])
        failure = self.failureResultOf(
            ensureDeferred(self.store.putManifest("new", body, oci.OCI_MANIFEST, "v1", [])),
            ManifestBlobsUnknown,
        )
        self.assertEqual(failure.value.digests,
                         [oci.digestOf(b"c"), oci.digestOf(b"1"), oci.digestOf(b"2")])
        self.assertFalse(self.result(self.store.repositoryExists("new")))
        self.assertEqual(self.result(self.store.catalog()), [])

    def test_nonDistributableLayerNotRequired(self):
        """
        A non-distributable layer need not be pushed.
        """
        self.pushBlob("a", b"{}")
        document = json.loads(imageManifest(b"{}", []))
        document["layers"] = [{
            "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "digest": oci.digestOf(b"foreign"), "size": 7,
        }]
        body = json.dumps(document).encode()
        self.result(self.store.putManifest("a", body, oci.OCI_MANIFEST, "v1", []))

    def test_index(self):
        """
        An index whose children are in the repository is accepted; one
        with a missing child is C{MANIFEST_BLOB_UNKNOWN} naming it.
        """
        child1, _ = self.pushImage("a", None)
        child2, _ = self.pushImage("a", None, layers=[b"arm"])
        body = indexManifest([child1, child2])
        self.result(self.store.putManifest("a", body, oci.OCI_INDEX, "multi", []))
        self.assertEqual(self.result(self.store.getManifest("a", "multi")),
                         (body, oci.OCI_INDEX, oci.digestOf(body)))
        missing = b'{"missing": true}'
        failure = self.failureResultOf(
            ensureDeferred(self.store.putManifest(
                "a", indexManifest([child1, missing]), oci.OCI_INDEX, "bad", []
            )),
            ManifestBlobsUnknown,
        )
        self.assertEqual(failure.value.digests, [oci.digestOf(missing)])

    def test_invalidManifest(self):
        """
        An invalid body is C{MANIFEST_INVALID} and changes nothing.
        """
        self.pushImage("a", "v1")
        before = self.readIndex("a")
        self.registryFailure(
            self.store.putManifest("a", b"{nope", oci.OCI_MANIFEST, "v1", []), "MANIFEST_INVALID"
        )
        self.assertEqual(self.readIndex("a"), before)

    def test_invalidExtraTag(self):
        """
        An invalid extra tag is C{TAG_INVALID} and nothing is tagged.
        """
        self.pushBlob("a", b"{}")
        self.pushBlob("a", b"layer")
        body = imageManifest(b"{}", [b"layer"])
        self.registryFailure(
            self.store.putManifest("a", body, oci.OCI_MANIFEST, "v1", ["ok", "-bad"]),
            "TAG_INVALID",
        )
        self.assertEqual(self.result(self.store.listTags("a")), [])

    def test_sha512Manifest(self):
        """
        A manifest pushed by a sha512 digest is stored and served under it.
        """
        self.pushBlob("a", b"{}")
        self.pushBlob("a", b"layer")
        body = imageManifest(b"{}", [b"layer"])
        digest = oci.digestOf(body, "sha512")
        info = self.result(self.store.putManifest("a", body, oci.OCI_MANIFEST, digest, ["t"]))
        self.assertEqual(info.digest, digest)
        self.assertEqual(self.result(self.store.getManifest("a", "t")),
                         (body, oci.OCI_MANIFEST, digest))
        self.assertEqual(self.result(self.makeStore().getManifest("a", digest))[0], body)

    def test_largeManifest(self):
        """
        A manifest larger than 64 KiB (parsed in the disk pool) is stored
        like a small one.
        """
        self.pushBlob("a", b"{}")
        document = json.loads(imageManifest(b"{}", []))
        document["layers"] = [{
            "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "digest": oci.digestOf(str(i).encode()), "size": i,
        } for i in range(1000)]
        body = json.dumps(document).encode()
        self.assertGreater(len(body), 65536)
        self.result(self.store.putManifest("a", body, oci.OCI_MANIFEST, "big", []))
        self.assertEqual(self.result(self.store.getManifest("a", "big"))[0], body)

    def test_indexCacheNoticesOtherWriter(self):
        """
        When C{index.json} is replaced behind the store's back by a file
        with a new inode (same size, same mtime), the next read sees the
        new content.
        """
        self.pushImage("a", "v1")
        self.assertEqual(self.result(self.store.listTags("a")), ["v1"])
        path = self.repoPath("a", "index.json")
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read()
        changed = data.replace(b'"v1"', b'"v2"')
        self.assertEqual(len(changed), len(data))
        tmp = path + ".new"
        with open(tmp, "wb") as f:
            f.write(changed)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, path)
        after = os.stat(path)
        self.assertNotEqual(after.st_ino, st.st_ino)
        self.assertEqual((after.st_size, after.st_mtime_ns), (st.st_size, st.st_mtime_ns))
        self.assertEqual(self.result(self.store.listTags("a")), ["v2"])

    def test_twoStoresShareARoot(self):
        """
        Tags pushed through two stores on one root (two processes) are all
        kept, and each store sees the other's.
        """
        other = self.makeStore()
        self.pushImage("a", "one")
        self.assertEqual(self.result(other.listTags("a")), ["one"])
        self.pushImage("a", "two", store=other, layers=[b"2"])
        self.assertEqual(self.result(self.store.listTags("a")), ["one", "two"])
        self.pushImage("a", "three", layers=[b"3"])
        self.assertEqual(self.result(other.listTags("a")), ["one", "three", "two"])

    def test_commitMode(self):
        """
        With C{commit} (fsync before rename) everything works the same.
        """
        store = LocalStore(self.root, InlineRunner(), commit=True)
        self.result(store.startService())
        body, _ = self.pushImage("a", "v1", store=store)
        uploadID = self.result(store.startUpload("a", "sha256"))
        self.patch("a", uploadID, b"c", store=store)
        self.result(store.completeUpload("a", uploadID, oci.digestOf(b"c"), None))
        self.assertEqual(self.result(store.getManifest("a", "v1"))[0], body)


class ReferrersTests(StoreCase):
    """
    L{LocalStore.referrers}: manifests whose subject is a given digest.
    """

    def pushReferrer(self, name: str, subjectBody: bytes, payload: bytes, **extra):
        """
        Push an artifact manifest (by digest) whose subject is
        C{subjectBody}; return its digest.
        """
        self.pushBlob(name, b"{}")
        self.pushBlob(name, payload)
        body = imageManifest(
            b"{}", [payload], configType=oci.OCI_EMPTY,
            subject=descriptorOf(oci.OCI_MANIFEST, subjectBody), **extra
        )
        digest = oci.digestOf(body)
        info = self.result(self.store.putManifest(name, body, oci.OCI_MANIFEST, digest, []))
        self.assertEqual(info.subject.digest, oci.digestOf(subjectBody))
        return digest

    def test_referrers(self):
        """
        Referrers of a manifest are listed with their artifact types,
        explicit or from the config; others' referrers are not.
        """
        subject, subjectDigest = self.pushImage("a", "v1")
        other, otherDigest = self.pushImage("a", "v2", layers=[b"o"])
        sig = self.pushReferrer("a", subject, b"sig", artifactType="application/x.sig")
        plain = self.pushReferrer("a", subject, b"plain")
        self.pushReferrer("a", other, b"other")
        infos = self.result(self.store.referrers("a", subjectDigest))
        self.assertEqual(
            sorted((i.digest, i.artifactType) for i in infos),
            sorted([(sig, "application/x.sig"), (plain, oci.OCI_EMPTY)]),
        )
        self.assertEqual(len(self.result(self.store.referrers("a", otherDigest))), 1)
        self.assertEqual(self.result(self.store.referrers("a", sig)), [])

    def test_artifactTypeInIndex(self):
        """
        The index entry of an artifact with an explicit C{artifactType}
        carries it.
        """
        subject, _ = self.pushImage("a", "v1")
        sig = self.pushReferrer("a", subject, b"sig", artifactType="application/x.sig")
        entries = {m["digest"]: m for m in self.readIndex("a")["manifests"]}
        self.assertEqual(entries[sig].get("artifactType"), "application/x.sig")

    def test_missingSubject(self):
        """
        A subject need not exist; its referrers are still listed.
        """
        ghost = b'{"ghost": 1}'
        digest = self.pushReferrer("a", ghost, b"p")
        infos = self.result(self.store.referrers("a", oci.digestOf(ghost)))
        self.assertEqual([i.digest for i in infos], [digest])

    def test_updatedAfterPushAndDelete(self):
        """
        The list follows later pushes and deletes.
        """
        subject, subjectDigest = self.pushImage("a", "v1")
        first = self.pushReferrer("a", subject, b"1")
        self.assertEqual([i.digest for i in self.result(self.store.referrers("a", subjectDigest))],
                         [first])
        second = self.pushReferrer("a", subject, b"2")
        self.assertEqual(
            sorted(i.digest for i in self.result(self.store.referrers("a", subjectDigest))),
            sorted([first, second]),
        )
        self.result(self.store.deleteManifest("a", first))
        self.assertEqual([i.digest for i in self.result(self.store.referrers("a", subjectDigest))],
                         [second])

    def test_afterRestart(self):
        """
        A new store finds referrers by reading the manifests from disk.
        """
        subject, subjectDigest = self.pushImage("a", "v1")
        sig = self.pushReferrer("a", subject, b"s", artifactType="application/x.sig")
        store = self.makeStore()
        infos = self.result(store.referrers("a", subjectDigest))
        self.assertEqual([(i.digest, i.artifactType) for i in infos],
                         [(sig, "application/x.sig")])

    def test_unknownRepository(self):
        """
        An unknown repository has no referrers (not an error).
        """
        self.assertEqual(self.result(self.store.referrers("nope", oci.digestOf(b"x"))), [])


class SharedRootTests(StoreCase):
    """
    Two stores on one root, as two worker processes (C{http.workers}): what
    one writes, the other answers at once, by replaying the index journal
    (L{zotwist.storage.journal}) rather than parsing C{index.json} again.
    """

    def setUp(self):
        super().setUp()
        self.other = self.makeStore()
        self.parses = {id(self.store): 0, id(self.other): 0}
        for store in (self.store, self.other):
            self.countParses(store)

    def countParses(self, store) -> None:
        """
        Count the parses of C{index.json} (readers' and writer's) C{store}
        makes.
        """
        original = store._readManifests

        def counting(path):
            self.parses[id(store)] += 1
            return original(path)

        store._readManifests = counting

    def test_tagVisibleThroughTheOther(self):
        """
        A tag pushed through one store is answered by the other right away;
        after the other's first look, later tags cost it no parse.
        """
        body, digest = self.pushImage("app", "v1")
        self.assertEqual(self.result(self.other.getManifest("app", "v1")),
                         (body, oci.OCI_MANIFEST, digest))
        parsed = self.parses[id(self.other)]
        copy = self.other._indexes["app"]
        body2, digest2 = self.pushImage("app", "v2", layers=[b"two"])
        self.assertEqual(self.result(self.other.getManifest("app", "v2")),
                         (body2, oci.OCI_MANIFEST, digest2))
        self.assertEqual(self.result(self.other.listTags("app")), ["v1", "v2"])
        self.assertEqual(self.result(self.other.statManifest("app", digest2))[2], digest2)
        self.assertIs(self.other._indexes["app"], copy)
        self.assertEqual(self.parses[id(self.other)], parsed)

    def test_deletesVisibleThroughTheOther(self):
        """
        A tag removed, then a manifest deleted by digest, through one store
        are gone through the other at once.
        """
        _, digest = self.pushImage("app", "v1", tags=["v2"])
        self.assertEqual(self.result(self.other.listTags("app")), ["v1", "v2"])
        self.result(self.store.deleteManifest("app", "v1"))
        self.registryFailure(self.other.getManifest("app", "v1"), "MANIFEST_UNKNOWN")
        self.assertEqual(self.result(self.other.listTags("app")), ["v2"])
        self.result(self.store.deleteManifest("app", digest))
        self.registryFailure(self.other.getManifest("app", "v2"), "MANIFEST_UNKNOWN")
        self.registryFailure(self.other.statManifest("app", digest), "MANIFEST_UNKNOWN")
        self.assertEqual(self.result(self.other.listTags("app")), [])
        self.assertEqual(self.parses[id(self.other)], 1)

    def test_takingTurns(self):
        """
        Both stores write in turns: each sees every tag, the file lists them
        all, and neither parsed the file again to write after the other.
        """
        stores = [self.store, self.other]
        for n in range(10):
            self.pushImage("app", f"t{n}", layers=[b"%d" % n], store=stores[n % 2])
        expected = sorted(f"t{n}" for n in range(10))
        for store in stores:
            self.assertEqual(self.result(store.listTags("app")), expected)
        tags = [m["annotations"][oci.REF_NAME] for m in self.readIndex("app")["manifests"]]
        self.assertEqual(sorted(tags), expected)
        # One parse each for the first look, none for the turns after.
        self.assertLessEqual(self.parses[id(self.store)], 1)
        self.assertLessEqual(self.parses[id(self.other)], 1)

    def test_unjournaledChangeIsParsed(self):
        """
        An C{index.json} rewritten by something that keeps no journal (here
        by hand, as another tool would) is parsed again, not trusted.
        """
        _, digest = self.pushImage("app", "v1")
        self.assertEqual(self.result(self.other.listTags("app")), ["v1"])
        self.makeLayout("app", [{
            "mediaType": oci.OCI_MANIFEST, "digest": digest, "size": 1,
            "annotations": {oci.REF_NAME: "handmade"},
        }])
        for store in (self.store, self.other):
            self.assertEqual(self.result(store.listTags("app")), ["handmade"])
        # Both writers notice too: a push keeps the hand-made tag.
        self.pushImage("app", "v2", store=self.other)
        self.assertEqual(self.result(self.store.listTags("app")), ["handmade", "v2"])

    def test_rotatedJournal(self):
        """
        Across journal rotations, the other store keeps following without
        parsing the file again.
        """
        self.addCleanup(setattr, journal, "ROTATE_SIZE", journal.ROTATE_SIZE)
        journal.ROTATE_SIZE = 1000
        self.pushImage("app", "t0")
        self.assertEqual(self.result(self.other.listTags("app")), ["t0"])
        parsed = self.parses[id(self.other)]
        inodes = set()
        for n in range(1, 12):
            self.pushImage("app", f"t{n}", layers=[b"%d" % n])
            inodes.add(os.stat(self.repoPath("app", journal.JOURNAL)).st_ino)
            self.assertEqual(len(self.result(self.other.listTags("app"))), n + 1)
        self.assertGreater(len(inodes), 1)
        self.assertEqual(self.parses[id(self.other)], parsed)


class CatalogTests(StoreCase):
    """
    The catalog follows pushes.
    """

    def test_nested(self):
        """
        Nested repositories C{a} and C{a/b} are both listed, sorted.
        """
        self.pushImage("a/b", "v1")
        self.pushImage("a", "v1")
        self.pushBlob("z", b"z")
        self.assertEqual(self.result(self.store.catalog()), ["a", "a/b", "z"])
        self.assertEqual(self.result(self.makeStore().catalog()), ["a", "a/b", "z"])

    def test_foundWhenCreatedBehindTheStoresBack(self):
        """
        A layout written by another process after start-up becomes known
        once it is used.
        """
        self.makeLayout("late")
        self.assertEqual(self.result(self.store.listTags("late")), [])
        self.assertEqual(self.result(self.store.catalog()), ["late"])


class ThreadedStoreTests(TestCase):
    """
    The store on a real thread pool.
    """

    def setUp(self):
        self.runner = ThreadPoolRunner(reactor, minThreads=1, maxThreads=4, name="store")
        self.runner.startService()
        self.addCleanup(self.runner.stopService)
        self.store = LocalStore(self.mktemp(), self.runner)

    async def pushBlob(self, name: str, data: bytes) -> str:
        """
        Upload C{data} through a session of two chunks.
        """
        uploadID = await self.store.startUpload(name, "sha256")
        half = len(data) // 2
        for start, chunk in [(0, data[:half]), (half, data[half:])]:
            writer = self.store.writerForSession(name, uploadID, start, len(chunk))
            self.assertIsNone(writer.rejection)
            writer.write(chunk)
            await writer.flushed()
            writer.close()
        digest = oci.digestOf(data)
        self.assertEqual(await self.store.completeUpload(name, uploadID, digest, None), len(data))
        return digest

    async def test_roundTrip(self):
        """
        Blobs uploaded in sessions and a manifest pushed under several tags
        at once, concurrently, all land.
        """
        await self.store.startService()
        config, layer = b"{}", os.urandom(300000)
        await gatherResults([
            ensureDeferred(self.pushBlob("a/b", config)),
            ensureDeferred(self.pushBlob("a/b", layer)),
        ])
        bodies = [imageManifest(config, [layer], annotations={"n": str(i)}) for i in range(8)]
        await gatherResults([
            ensureDeferred(self.store.putManifest("a/b", body, oci.OCI_MANIFEST, f"t{i}", []))
            for i, body in enumerate(bodies)
        ])
        self.assertEqual(await self.store.listTags("a/b"), [f"t{i}" for i in range(8)])
        for i, body in enumerate(bodies):
            self.assertEqual((await self.store.getManifest("a/b", f"t{i}"))[0], body)
        reader = await self.store.openBlob("a/b", oci.digestOf(layer))
        try:
            self.assertEqual(await reader.read(1000, 50), layer[1000:1050])
        finally:
            reader.close()

    async def test_twoStoresConcurrently(self):
        """
        Two stores on one root (as two workers), each on its own pool,
        push tags to one repository at once while both keep listing it:
        in the end each lists every tag, untagging through one is seen by
        the other, and the file holds exactly the tags left.
        """
        other = LocalStore(self.store.root, self.runner)
        await self.store.startService()
        await other.startService()
        config, layer = b"{}", b"layer"
        await self.pushBlob("a/b", config)
        await self.pushBlob("a/b", layer)
        stores = [self.store, other]
        work = []
        for i in range(40):
            body = imageManifest(config, [layer], annotations={"n": str(i)})
            work.append(ensureDeferred(
                stores[i % 2].putManifest("a/b", body, oci.OCI_MANIFEST, f"t{i:02d}", [])
            ))
            if i % 5 == 0:
                work.append(ensureDeferred(stores[(i + 1) % 2].listTags("a/b")))
        await gatherResults(work)
        expected = [f"t{i:02d}" for i in range(40)]
        for store in stores:
            self.assertEqual(await store.listTags("a/b"), expected)
        await gatherResults([
            ensureDeferred(stores[i % 2].deleteManifest("a/b", f"t{i:02d}"))
            for i in range(0, 40, 3)
        ])
        left = [t for i, t in enumerate(expected) if i % 3]
        for store in stores:
            self.assertEqual(await store.listTags("a/b"), left)
        path = os.path.join(self.store.root, "a", "b", "index.json")
        with open(path, "rb") as f:
            manifests = json.loads(f.read())["manifests"]
        tags = sorted(m["annotations"][oci.REF_NAME] for m in manifests if "annotations" in m)
        self.assertEqual(tags, left)


class PowerLossTests(StoreCase):
    """
    Without C{storage.commit}, C{index.json} is swapped in unsynced
    (L{zotwist.storage.syncer}): the last synced content stays beside it
    until the new one is on disk, so an index a power loss left empty costs
    the unsynced changes, not the repository's tags.
    """

    def test_emptiedIndexFallsBackToSyncedCopy(self):
        """
        After a push the index is synced (the previous copy dropped); the
        next push keeps that synced content as the previous copy; an empty
        C{index.json} (what the power loss leaves) then reads as that copy
        in a fresh store, which writes its next change on top of it.
        """
        self.pushImage("app", "v1")
        self.result(self.store._lazySync.sync())
        index = os.path.join(self.root, "app", "index.json")
        previous = os.path.join(self.root, "app", ".index.json.prev")
        self.assertFalse(os.path.exists(previous))
        self.pushImage("app", "v2", layers=[b"two"])
        self.assertTrue(os.path.exists(previous))
        with open(index, "wb"):
            pass  # the unsynced content lost
        fresh = self.makeStore()
        self.assertEqual(self.result(fresh.listTags("app")), ["v1"])
        self.result(fresh.putManifest(
            "app", *self.result(self.store.getManifest("app", "v1"))[:2], "v3", []
        ))
        self.assertEqual(self.result(fresh.listTags("app")), ["v1", "v3"])
        self.result(fresh._lazySync.sync())
        self.assertFalse(os.path.exists(previous))
