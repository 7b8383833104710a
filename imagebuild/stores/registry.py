"""Images between the local store and a registry, and between registries.

Push sends only what the registry lacks: each blob is checked with HEAD,
mounted from another repository of the same registry when it is known there,
and otherwise uploaded, streamed from its source. A bounded number of blobs
travel at once. The manifest's exact bytes go last, so a failed push never
leaves a tag pointing at a half image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from imagebuild.errors import CorruptBlobError, RegistryError, RegistryUnreachableError, StoreError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import (MAX_CONFIG_BYTES, Descriptor, MalformedError, ParsedManifest, Platform,
                                  parse_config, parse_index)
from imagebuild.oci.reference import Reference
from imagebuild.registry.client import ManifestBytes, RegistryClient
from imagebuild.stores.layout import LayoutStore, StoreNotWritableError, media_type_of_manifest

DEFAULT_PARALLEL = 4
KNOWN_BLOBS_FILE = "registry-blobs.json"
Progress = Callable[[str], None] | None


@dataclass
class PushResult:
    reference: str
    digest: str
    bytes_uploaded: int = 0
    blobs_uploaded: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    requests: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PullResult:
    reference: str
    digest: str
    ref_name: str            # the name the image is tagged under in the local store
    bytes_downloaded: int = 0
    blobs_fetched: int = 0
    blobs_present: int = 0
    requests: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def registry_reference(text: str) -> Reference:
    ref = Reference.parse(text)
    if not ref.registry:
        raise UserError(f"{text!r} names no registry", hint="write it as HOST[:PORT]/NAME[:TAG], e.g. localhost:5000/acme/hello")
    return ref


def open_client(host: str, *, insecure: bool | None = None, **options) -> RegistryClient:
    return RegistryClient(host, insecure=insecure, **options)


# -- where a manifest's parts come from -------------------------------------------

class _Source:
    """Blobs and child manifests of one image, wherever they live."""

    def malformed(self, manifest: ManifestBytes, exc: MalformedError) -> Exception:
        """The error for a manifest of this source that does not parse."""
        raise NotImplementedError

    def manifest(self, digest: str) -> ManifestBytes:
        raise NotImplementedError

    def opener(self, descriptor: Descriptor) -> Callable[[], contextlib.AbstractContextManager]:
        raise NotImplementedError


class _StoreSource(_Source):
    def __init__(self, store: LayoutStore):
        self.store = store

    def malformed(self, manifest, exc):
        return StoreError(f"manifest {manifest.digest} in the store at {self.store.root} is malformed: {exc}",
                          hint="bake or pull the image again")

    def manifest(self, digest: str) -> ManifestBytes:
        raw = self.store.read_blob(digest)
        try:
            media_type = media_type_of_manifest(raw)
        except (ValueError, AttributeError) as exc:  # not JSON, or JSON but no object
            raise StoreError(f"blob {digest} in the store is not a manifest ({exc})") from None
        return ManifestBytes(raw, media_type, Digest(digest))

    def opener(self, descriptor):
        @contextlib.contextmanager
        def opened():
            # The upload announces the descriptor's size; a blob of another size would break off mid-request.
            size = self.store.blob_size(descriptor.digest)
            if size != descriptor.size:
                raise StoreError(f"blob {descriptor.digest} in the store at {self.store.root} is {size} bytes, "
                                 f"but the image's manifest says {descriptor.size}",
                                 hint="bake or pull the image again")
            with self.store.open_blob(descriptor.digest) as reader:
                yield reader
        return opened


class _RegistrySource(_Source):
    def __init__(self, client: RegistryClient, repository: str):
        self.client = client
        self.repository = repository

    def malformed(self, manifest, exc):
        return RegistryError(f"registry {self.client.host} sent a malformed manifest for "
                             f"{self.client.host}/{self.repository}@{manifest.digest}: {exc}")

    def manifest(self, digest: str) -> ManifestBytes:
        found = self.client.get_manifest(self.repository, digest)
        if found is None:
            raise RegistryError(f"{self.client.host}/{self.repository}@{digest} is not in the registry")
        return found

    def opener(self, descriptor):
        @contextlib.contextmanager
        def opened():
            with self.client.open_blob(self.repository, descriptor.digest) as response:
                yield _VerifyingIterReader(response.iter_bytes(1024 * 1024), descriptor)
        return opened


class _IterReader:
    """`read(n)` over an iterator of chunks."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._done = False

    def _more(self) -> None:
        chunk = next(self._chunks, None)
        if chunk is None:
            self._done = True
        else:
            self._buffer += chunk

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buffer) < n):
            self._more()
        if n < 0 or n >= len(self._buffer):
            out = bytes(self._buffer)
            self._buffer.clear()
        else:
            out = bytes(self._buffer[:n])
            del self._buffer[:n]
        return out


class _VerifyingIterReader(_IterReader):
    """An _IterReader that checks size and digest, for streams no store write verifies."""

    def __init__(self, chunks: Iterable[bytes], descriptor: Descriptor):
        super().__init__(chunks)
        self._hash = hashlib.sha256()
        self._descriptor = descriptor
        self._size = 0

    def _more(self) -> None:
        chunk = next(self._chunks, None)
        digest = self._descriptor.digest
        if chunk is not None:
            self._hash.update(chunk)
            self._size += len(chunk)
            if self._size > self._descriptor.size:
                raise RegistryError(f"blob {digest} is larger than the {self._descriptor.size} bytes its "
                                    "descriptor says", code="SIZE_INVALID")
            self._buffer += chunk
            return
        self._done = True
        if self._size != self._descriptor.size:
            raise RegistryError(f"blob {digest} is {self._size} bytes, not the {self._descriptor.size} "
                                "bytes its descriptor says", code="SIZE_INVALID")
        if "sha256:" + self._hash.hexdigest() != digest:
            raise RegistryError(f"blob {digest} arrived with different content", hint="retry")


def _child_manifests(manifest: ManifestBytes) -> list[Descriptor]:
    """The manifests an index lists (none for an image manifest); MalformedError when it is no index."""
    if manifest.media_type not in mt.INDEX_TYPES:
        return []
    return list(parse_index(manifest.raw))


def _blobs(manifest: ManifestBytes) -> list[Descriptor]:
    """The config and layers of an image manifest (none for an index), checked; MalformedError else."""
    if manifest.media_type in mt.INDEX_TYPES:
        return []
    return list(ParsedManifest.parse(manifest.raw, manifest.media_type).blobs())


# -- sending a manifest tree ----------------------------------------------------------

def send_image(client: RegistryClient, repository: str, top: ManifestBytes, source: _Source, tag: str,
               *, mount_from: Callable[[str], str | None] = lambda digest: None,
               parallel: int = DEFAULT_PARALLEL, progress: Progress = None) -> PushResult:
    """Make `top` and everything it references present in `repository`, then tag it."""
    result = PushResult(reference=f"{client.host}/{repository}:{tag}", digest=str(top.digest))
    before = client.counters.requests

    def parsed(manifest: ManifestBytes, read: Callable[[ManifestBytes], list[Descriptor]]) -> list[Descriptor]:
        try:
            return read(manifest)
        except MalformedError as exc:
            raise source.malformed(manifest, exc) from None

    children = [source.manifest(d.digest) for d in parsed(top, _child_manifests)]
    blobs: dict[str, Descriptor] = {}
    for manifest in children + [top]:
        for blob in parsed(manifest, _blobs):
            blobs.setdefault(blob.digest, blob)

    def one(blob: Descriptor):
        outcome = client.upload_blob(repository, blob, source.opener(blob), mount_from=mount_from(blob.digest))
        if progress and outcome.how != "skipped":
            progress(f"{outcome.how} {blob.digest[:19]} ({blob.size} bytes)")
        return outcome

    pool = ThreadPoolExecutor(max_workers=max(1, parallel))
    try:
        for outcome in pool.map(one, blobs.values()):
            if outcome.how == "skipped":
                result.blobs_skipped += 1
            elif outcome.how == "mounted":
                result.blobs_mounted += 1
            else:
                result.blobs_uploaded += 1
                result.bytes_uploaded += outcome.bytes_sent
    except Exception:
        # One blob failed: start no other, let those under way end, so the error is the only news.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    except BaseException:
        # Ctrl-C or SIGTERM: stop now. Aborting the transport wakes the workers blocked on a socket and
        # keeps them from sending another chunk; waiting for them could take a stalled request's timeout.
        client.transport.abort()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    for child in children:
        client.put_manifest(repository, child.digest, child.raw, child.media_type)
        result.bytes_uploaded += len(child.raw)
    client.put_manifest(repository, tag, top.raw, top.media_type)
    result.bytes_uploaded += len(top.raw)
    result.requests = client.counters.requests - before
    return result


# -- local store <-> registry ------------------------------------------------------------

def push_image(store: LayoutStore, local_ref_name: str, target: Reference, *, insecure: bool | None = None,
               progress: Progress = None, client: RegistryClient | None = None,
               parallel: int = DEFAULT_PARALLEL) -> PushResult:
    """Push an image of the local store to `target` (HOST/REPO[:TAG]).

    Without a tag in `target`, the tag of `local_ref_name` is used (`hello:abc1234` → `abc1234`).
    """
    if not target.registry:
        raise UserError(f"{target} names no registry", hint="use HOST[:PORT]/NAME[:TAG]")
    if target.digest:
        raise UserError(f"cannot push to a digest reference {target}", hint="push to a tag")
    if not store.exists():
        raise UserError(f"the local store at {store.root} is empty", hint="bake an image first")
    descriptor = store.resolve(local_ref_name)
    tag = target.tag or _tag_of(local_ref_name)
    source = _StoreSource(store)
    top = source.manifest(descriptor.digest)
    own = client is None
    client = client or open_client(target.registry, insecure=insecure)
    try:
        known = _known_blobs(store, target.registry)

        def mount_from(digest: str) -> str | None:
            repo = known.get(digest)
            return repo if repo and repo != target.repository else None

        result = send_image(client, target.repository, top, source, tag, mount_from=mount_from,
                            parallel=parallel, progress=progress)
        _remember_blobs(store, target.registry, target.repository, top)
        return result
    finally:
        if own:
            client.close()


def _tag_of(local_ref_name: str) -> str:
    last = local_ref_name.rsplit("/", 1)[-1]
    if "@" in last:
        return "latest"
    return last.rpartition(":")[2] if ":" in last else "latest"


def pull_image(store: LayoutStore, source: Reference, *, insecure: bool | None = None,
               platform: Platform = Platform(), progress: Progress = None,
               client: RegistryClient | None = None) -> PullResult:
    """Bring `source` into the local store, tagged under `str(source)`.

    An index is resolved to the manifest for `platform`; the tag (or
    `name@digest` for a digest reference) then points at that image manifest,
    so `store.resolve(result.ref_name)` and `store.read_manifest` work on it.

    Everything the registry sends is checked before it is used: manifests, the
    index and the config field by field, every blob against its digest and size.
    The tag is written last, so a refused answer leaves no tag behind.
    """
    if not source.registry:
        raise UserError(f"{source} names no registry", hint="use HOST[:PORT]/NAME[:TAG] or NAME@sha256:...")
    own = client is None
    client = client or open_client(source.registry, insecure=insecure)
    try:
        return _pull(store, source, client, platform, progress)
    except MalformedError as exc:
        raise RegistryError(f"registry {source.registry} sent a malformed answer for {source}: {exc}",
                            hint="the registry, or what pushed the image, is broken; tell its operators") from None
    except (RegistryError, RegistryUnreachableError) as exc:
        if str(source) in exc.message:
            raise
        # Name the reference: a pull in a script or a bake is one of several.
        renamed = (RegistryError(f"pulling {source}: {exc.message}", hint=exc.hint, status=exc.status,
                                 code=exc.code, retried=exc.retried) if isinstance(exc, RegistryError)
                   else RegistryUnreachableError(f"pulling {source}: {exc.message}", hint=exc.hint))
        raise renamed from None
    finally:
        if own:
            client.close()


def _pull(store: LayoutStore, source: Reference, client: RegistryClient, platform: Platform,
          progress: Progress) -> PullResult:
    before = client.counters.requests
    top = client.get_manifest(source.repository, source.identifier)
    if top is None:
        raise UserError(f"{source} is not in the registry", hint="check the name, tag or digest")
    result = PullResult(reference=str(source), digest=str(top.digest), ref_name=str(source))
    image = top
    if top.media_type in mt.INDEX_TYPES:
        image = _platform_manifest(client, source, top, platform)
    manifest = ParsedManifest.parse(image.raw, image.media_type)
    _require_image(source, manifest)
    # The config comes first and is checked before any layer travels; it is small by definition.
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise MalformedError(f"its config claims {manifest.config.size} bytes, over the "
                             f"{MAX_CONFIG_BYTES // (1024 * 1024)} MiB limit")
    store.ensure()
    if store.has_blob(manifest.config.digest):
        config_raw = store.read_blob(manifest.config.digest)
        result.blobs_present += 1
    else:
        received: list[bytes] = []

        def keep(chunks) -> None:
            received[:] = [b"".join(chunks)]
            if Digest.of(received[0]) != manifest.config.digest:  # a retry fetches it again
                raise RegistryError(f"blob {manifest.config.digest} arrived with different content", hint="retry")

        result.bytes_downloaded += client.fetch_blob(source.repository, manifest.config, keep)
        config_raw = received[0]
        result.blobs_fetched += 1
    diff_ids = parse_config(config_raw)["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest.layers):
        raise MalformedError(f"its config lists {len(diff_ids)} diff_ids for {len(manifest.layers)} layers")
    for blob in manifest.layers:
        if store.has_blob(blob.digest):
            result.blobs_present += 1
            continue

        def sink(chunks, blob=blob):
            # put_blob_stream hashes as it writes; a mismatch is the registry's, and worth a retry.
            try:
                store.put_blob_stream(_IterReader(chunks), Digest(blob.digest))
            except CorruptBlobError:
                raise RegistryError(f"blob {blob.digest} arrived with different content", hint="retry") from None

        result.bytes_downloaded += client.fetch_blob(source.repository, blob, sink)
        result.blobs_fetched += 1
        if progress:
            progress(f"fetched {blob.digest[:19]} ({blob.size} bytes)")
    store.put_blob(config_raw)
    if image is not top:
        store.put_blob(top.raw)
    store.put_manifest(image.raw, image.media_type, [result.ref_name])
    result.digest = str(image.digest) if top.media_type not in mt.INDEX_TYPES else str(top.digest)
    result.requests = client.counters.requests - before
    return result


def _require_image(source: Reference, manifest: ParsedManifest) -> None:
    """Artifacts (signatures, promotion records, Helm charts) share the manifest type but carry no image."""
    if manifest.config.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        raise UserError(f"{source} is not a container image: its config is {manifest.config.media_type!r}",
                        hint="pull an image tag or digest, not an artifact")


def _platform_manifest(client: RegistryClient, source: Reference, index: ManifestBytes,
                       platform: Platform) -> ManifestBytes:
    for child in parse_index(index.raw):
        if child.platform and child.platform.os == platform.os and \
                child.platform.architecture == platform.architecture and \
                (platform.variant is None or child.platform.variant == platform.variant):
            found = client.get_manifest(source.repository, child.digest)
            if found is None:
                break
            return found
    raise UserError(f"{source} has no image for {platform.os}/{platform.architecture}",
                    hint="pick a reference that offers this platform")


# -- registry -> registry ---------------------------------------------------------------

def copy_image(source_client: RegistryClient, source_repository: str, digest: str,
               target_client: RegistryClient, target_repository: str, tag: str, *,
               manifest: ManifestBytes | None = None, parallel: int = DEFAULT_PARALLEL,
               progress: Progress = None) -> PushResult:
    """Copy an image by digest, keeping it: HEAD each blob, mount within one registry, else stream it over.

    `manifest`, when the caller already holds the manifest's bytes, saves fetching them again.
    """
    source = _RegistrySource(source_client, source_repository)
    top = manifest if manifest is not None and manifest.digest == digest else source.manifest(digest)
    same_host = source_client.host == target_client.host

    def mount_from(blob_digest: str) -> str | None:
        return source_repository if same_host and source_repository != target_repository else None

    return send_image(target_client, target_repository, top, source, tag, mount_from=mount_from,
                      parallel=parallel, progress=progress)


# -- which repository of a registry already holds a blob ---------------------------------
# A hint for cross-repository mounts, kept beside the store; losing it only costs uploads.

def _known_blobs(store: LayoutStore, host: str) -> dict[str, str]:
    try:
        data = json.loads((store.root / KNOWN_BLOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data.get(host, {}) if isinstance(data, dict) else {}


def _remember_blobs(store: LayoutStore, host: str, repository: str, top: ManifestBytes) -> None:
    digests = [b.digest for b in _blobs(top)] if top.media_type not in mt.INDEX_TYPES else []
    path = store.root / KNOWN_BLOBS_FILE
    try:
        with store.locked():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
            known = data.setdefault(host, {})
            for digest in digests:
                known[digest] = repository
            store._atomic_write(path, json.dumps(data, sort_keys=True).encode())
    except (OSError, StoreError, StoreNotWritableError):
        # Only a hint for later mounts: a read-only store still pushes.
        pass

