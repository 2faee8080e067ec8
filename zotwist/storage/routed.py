# -*- test-case-name: tests.test_routed -*-
"""
C{storage.subPaths}: repositories under a route prefix live in a store of
their own, with its own root, dedupe, garbage collection and retention.

zot picks a repository's store by the first component of its name: the
sub-path C{"/ci"} holds C{ci/app} and C{ci/tools/x}, while C{ci} alone and
every other name stay in the default store (zot's C{GetRoutePrefix}).  A
sub-path store keeps the full repository name under its root, as zot does
(C{<root>/ci/app}).

L{RoutedStore} is the one L{IRegistryStore} the web layer sees; it sends
each call to the store its repository routes to.  The catalog merges the
stores, each listing only the names that route to it.  A cross-repository
mount between two stores copies the blob (streamed through an upload
writer, so it is verified against its digest): a hard link cannot cross
filesystems, and each store's dedupe index only knows its own root.
"""

from zope.interface import implementer

from zotwist import oci
from zotwist.storage.interfaces import IRegistryStore

#: Bytes read and written per step of a cross-store copy.
COPY_CHUNK = 1024 * 1024


def routeOf(prefix: str) -> str:
    """
    The repository-name component a C{storage.subPaths} key routes (zot's
    config keys are case-insensitive: viper lowers them).
    """
    return prefix.strip("/").lower()


@implementer(IRegistryStore)
class RoutedStore:
    """
    Dispatches every repository operation to the store its name routes to.

    @param default: the store of C{storage.rootDirectory}.
    @param routes: C{{subPaths key: store}}.
    @ivar root: the default store's root (what health checks watch).
    """

    def __init__(self, default, routes: dict):
        self.default = default
        self.routes = {routeOf(prefix): store for prefix, store in routes.items()}
        self.root = default.root

    def storeFor(self, name: str):
        """
        The store holding repository C{name}.
        """
        first, slash, _ = name.partition("/")
        if not slash:
            return self.default
        return self.routes.get(first, self.default)

    def stores(self) -> list:
        """
        Every store, the default first.
        """
        return [self.default, *self.routes.values()]

    # -- life cycle ---------------------------------------------------------------

    async def startService(self) -> None:
        for store in self.stores():
            await store.startService()

    async def stopService(self) -> None:
        for store in self.stores():
            await store.stopService()

    # -- repositories ---------------------------------------------------------------

    async def catalog(self) -> list[str]:
        names = []
        for store in self.stores():
            names.extend(n for n in await store.catalog() if self.storeFor(n) is store)
        return sorted(names)

    def repositoryExists(self, name):
        return self.storeFor(name).repositoryExists(name)

    # -- blobs ------------------------------------------------------------------------

    def statBlob(self, name, digest):
        return self.storeFor(name).statBlob(name, digest)

    def openBlob(self, name, digest):
        return self.storeFor(name).openBlob(name, digest)

    def deleteBlob(self, name, digest):
        return self.storeFor(name).deleteBlob(name, digest)

    async def mountBlob(self, name, digest, fromName, mayRead=None):
        """
        Within one store, that store's mount (a link when it can); from a
        repository of another store, a verified copy.  Without C{fromName}
        only the target's own store is searched.
        """
        target = self.storeFor(name)
        if fromName is None:
            return await target.mountBlob(
                name, digest, None,
                lambda n: self.storeFor(n) is target and (mayRead is None or mayRead(n)),
            )
        source = self.storeFor(fromName)
        if source is target:
            return await target.mountBlob(name, digest, fromName, mayRead)
        if mayRead is not None and not mayRead(fromName):
            return None
        existing = await target.statBlob(name, digest)
        if existing is not None:
            return existing
        return await self._copy(source, fromName, target, name, digest)

    async def _copy(self, source, fromName: str, target, name: str, digest: str):
        """
        Stream a blob from one store into another, verified by its digest.

        @return: its size, or L{None} when the source does not hold it.
        """
        algorithm, _ = oci.parseDigest(digest)
        if await source.statBlob(fromName, digest) is None:
            return None
        reader = await source.openBlob(fromName, digest)
        writer = None
        try:
            size = reader.size
            writer = target.writerForMonolithic(name, algorithm, size)
            offset = 0
            while offset < size:
                chunk = await reader.read(offset, min(COPY_CHUNK, size - offset))
                if not chunk:
                    return None  # the source shrank under us: not mounted
                writer.write(chunk)
                offset += len(chunk)
                await writer.flushed()
            return await target.commitMonolithic(name, digest, writer)
        finally:
            reader.close()
            if writer is not None:
                writer.close()

    # -- uploads -------------------------------------------------------------------------

    def startUpload(self, name, algorithm):
        return self.storeFor(name).startUpload(name, algorithm)

    def uploadStatus(self, name, uploadID):
        return self.storeFor(name).uploadStatus(name, uploadID)

    def cancelUpload(self, name, uploadID):
        return self.storeFor(name).cancelUpload(name, uploadID)

    def writerForSession(self, name, uploadID, start, length):
        return self.storeFor(name).writerForSession(name, uploadID, start, length)

    def writerForMonolithic(self, name, algorithm, length):
        return self.storeFor(name).writerForMonolithic(name, algorithm, length)

    def completeUpload(self, name, uploadID, digest, writer):
        return self.storeFor(name).completeUpload(name, uploadID, digest, writer)

    def commitMonolithic(self, name, digest, writer):
        return self.storeFor(name).commitMonolithic(name, digest, writer)

    # -- manifests and tags ------------------------------------------------------------------

    def getManifest(self, name, reference):
        return self.storeFor(name).getManifest(name, reference)

    def statManifest(self, name, reference):
        return self.storeFor(name).statManifest(name, reference)

    def putManifest(self, name, body, contentType, reference, tags):
        return self.storeFor(name).putManifest(name, body, contentType, reference, tags)

    def deleteManifest(self, name, reference):
        return self.storeFor(name).deleteManifest(name, reference)

    def listTags(self, name):
        return self.storeFor(name).listTags(name)

    def referrers(self, name, digest):
        return self.storeFor(name).referrers(name, digest)


__all__ = ["RoutedStore", "routeOf", "COPY_CHUNK"]
