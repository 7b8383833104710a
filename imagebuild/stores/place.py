"""A place that holds images: one protocol, and its two places on disk and in a registry.

An `ImagePlace` is one repository: a name in the local OCI layout, or a
repository of a registry (stores/memory.py holds a third, in memory). It
lists tags, reads and writes manifests as exact bytes, checks, opens and
writes blobs as verified streams, may mount a blob from another repository
of its registry, and finds the manifests that name an image as their
`subject` (its attachments). `stores/copy.py` moves images between any two.

Attachments are listed by the OCI 1.1 referrers API where a registry has it,
and otherwise by the referrers tag schema: the tag `sha256-<hex of the
subject>` holds an OCI image index of the referrers' descriptors. The local
layout and the memory place use the same tag.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, ContextManager, Iterator, Protocol, Sequence, TypeVar

from imagebuild.errors import ImageBuildError, RegistryError, StoreError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest, is_digest
from imagebuild.oci.mediatypes import media_type_of_manifest
from imagebuild.oci.model import (Descriptor, MalformedError, ManifestBytes, ParsedManifest, Platform, load_json_object,
                                  parse_index)
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.streams import VerifyingIterReader

if TYPE_CHECKING:
    # Only a registry place holds one: the store and memory places never load httpx.
    from imagebuild.registry.client import RegistryClient

T = TypeVar("T")
Opener = Callable[[], ContextManager[BinaryIO]]   # a fresh reader on every call, for retries


class ImagePlace(Protocol):
    """One repository that holds images; `label` names it in messages and records."""

    label: str

    def tags(self) -> list[str]: ...

    def manifest(self, reference: str) -> ManifestBytes | None:
        """A tag or a digest to the manifest's exact bytes; None when the place does not hold it."""

    def put_manifest(self, manifest: ManifestBytes, tags: Sequence[str] = (),
                     platform: Platform | None = None) -> None:
        """Store the exact bytes, under each of `tags` (by digest alone without tags).
        `platform` is what a layout's index records beside the tag; registries ignore it."""

    def has_blob(self, digest: str) -> bool: ...

    def open_blob(self, descriptor: Descriptor) -> ContextManager[BinaryIO]:
        """A reader that raises once the last byte is out when the bytes do not match the descriptor."""

    def put_blob(self, descriptor: Descriptor, opener: Opener) -> int:
        """Write the blob `opener` reads, refusing other bytes than `descriptor` names; returns the bytes sent."""

    def mount(self, descriptor: Descriptor, source: "ImagePlace") -> bool:
        """Make the blob present without moving bytes, from another repository of the same registry;
        False (and no request) when `source` cannot lend it."""

    def referrers(self, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Descriptors of the manifests whose `subject` is `subject`."""

    def add_referrer(self, subject: str, referrer: Descriptor) -> None:
        """Record `referrer` (already stored) under `subject` for places without a referrers API."""

    def add_referrers(self, subject: str, referrers: Sequence[tuple[Descriptor, ManifestBytes]]) -> None:
        """Record each referrer (already stored; its manifest's bytes given, so none is read back) under
        `subject` at once, for places without a referrers API."""

    def retrying(self, transfer: Callable[[], T], doing: str) -> T:
        """Run a whole blob transfer read from this place again after a failure worth a retry."""

    def remove(self, tag: str) -> bool:
        """Take away the manifest under `tag`: the tag in a layout or memory, the manifest by digest in a
        registry (the distribution API deletes no bare tag), so only for a manifest no other tag shares.
        False when the place cannot delete."""

    def malformed(self, what: str, exc: MalformedError) -> ImageBuildError:
        """The error for `what` (a manifest, a config) of this place that does not parse or fit."""

    def abort(self) -> None:
        """Give up every transfer with this place at once (Ctrl-C, SIGTERM): blocked ones wake and fail."""


# -- pure helpers every place shares -------------------------------------------------------

def manifest_of(raw: bytes) -> ManifestBytes:
    return ManifestBytes(raw, media_type_of_manifest(raw), Digest.of(raw))


def descriptor_of(manifest: ManifestBytes, platform: Platform | None = None) -> Descriptor:
    return Descriptor(manifest.media_type, manifest.digest, len(manifest.raw), platform=platform)


def children_of(manifest: ManifestBytes) -> list[Descriptor]:
    """The manifests an index lists, checked; none for an image manifest. MalformedError when it is no index."""
    if manifest.media_type not in mt.INDEX_TYPES:
        return []
    return list(parse_index(manifest.raw))


def blobs_of(manifest: ManifestBytes) -> list[Descriptor]:
    """The config and layers an image manifest names (an artifact's too), checked; none for an index.
    MalformedError when it is no manifest."""
    if manifest.media_type in mt.INDEX_TYPES:
        return []
    return list(ParsedManifest.parse(manifest.raw, manifest.media_type).blobs())


def referrers_tag(subject: str) -> str:
    """The referrers tag schema's tag for `subject`: `sha256-<hex>`."""
    return "sha256-" + Digest(subject).hex


# An image has a handful of attachments (its SBOMs, provenance, attestations); each listed one costs a
# request to read, so a place listing more is refused rather than followed.
MAX_REFERRERS = 1000


def referrers_in(index: ManifestBytes | None, artifact_type: str | None, subject: str | None = None) -> list[Descriptor]:
    """The descriptors a referrers index lists (of `artifact_type` only, when given); MalformedError
    when it is no index."""
    if index is None or index.media_type != mt.OCI_INDEX:
        return []
    return referrer_descriptors(load_json_object(index.raw, "referrers index").get("manifests"), artifact_type,
                                subject)


def referrer_descriptors(entries: Any, artifact_type: str | None, subject: str | None = None) -> list[Descriptor]:
    """Referrer entries (from an index or the referrers API) as descriptors, checked; MalformedError else:
    more than MAX_REFERRERS, an entry that is no descriptor of a manifest, or `subject` itself listed
    among its referrers (a loop)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise MalformedError("the referrers index has manifests that are not a list")
    if len(entries) > MAX_REFERRERS:
        raise MalformedError(f"the referrers index lists {len(entries)} manifests, over {MAX_REFERRERS}")
    found = [Descriptor.from_dict(entry) for entry in entries]   # checks each entry is a descriptor
    for descriptor in found:
        if descriptor.media_type not in mt.ALL_MANIFEST_TYPES:
            raise MalformedError(f"referrer {descriptor.digest} has the media type "
                                 f"{descriptor.media_type[:80]!r}, not a manifest's")
        if subject is not None and descriptor.digest == subject:
            raise MalformedError(f"it lists {subject} among its own referrers")
    return [descriptor for descriptor, entry in zip(found, entries)
            if artifact_type is None or entry.get("artifactType") == artifact_type]


def index_with_referrer(index: ManifestBytes | None, referrer: Descriptor, artifact_type: str | None) -> ManifestBytes:
    """The referrers index (new, or `index`) with `referrer` in it once; MalformedError when `index` is no index."""
    return index_with_referrers(index, [(referrer, artifact_type)])


def index_with_referrers(index: ManifestBytes | None,
                         referrers: Sequence[tuple[Descriptor, str | None]]) -> ManifestBytes:
    """The referrers index (new, or `index`) with each (referrer, artifact type) in it once, as adding them
    one by one would leave it; MalformedError when `index` is no index."""
    entries = []
    if index is not None and index.media_type == mt.OCI_INDEX:
        entries = load_json_object(index.raw, "referrers index").get("manifests") or []
        referrer_descriptors(entries, None)   # each entry a descriptor, before any is kept
    for referrer, artifact_type in referrers:
        entries = [e for e in entries if e.get("digest") != referrer.digest]
        entry: dict[str, Any] = referrer.to_dict()
        if artifact_type:
            entry["artifactType"] = artifact_type
        entries.append(entry)
    return manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}))


def put_bytes(place: ImagePlace, data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
    """A small blob held in memory, written to `place` unless it is there."""
    descriptor = Descriptor(media_type, Digest.of(data), len(data))
    if not place.has_blob(descriptor.digest):
        place.put_blob(descriptor, lambda: contextlib.nullcontext(io.BytesIO(data)))
    return descriptor


# Independent reads sent at once: enough to hide a registry's round trips, few enough to stay polite.
READS_AT_ONCE = 8


def in_parallel(calls: Sequence[Callable[[], Any]], places: Sequence[ImagePlace] = (),
                at_once: int = READS_AT_ONCE) -> list:
    """Run independent reads at once; their results in the order given. A failure is raised after the
    others end, the first in that order winning, so the error is the one the calls made one by one
    would have raised first. Ctrl-C or SIGTERM aborts `places` at once and waits for no read."""
    if len(calls) <= 1 or (places and all(isinstance(place, LocalPlace) for place in places)):
        # One call, or reads of files on this machine: threads would only add their start-up (and an
        # everyday command on the local store the import of concurrent.futures and logging).
        return [call() for call in calls]
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=min(at_once, len(calls)), thread_name_prefix="read")
    try:
        futures = [pool.submit(call) for call in calls]
        for future in futures:
            future.exception()      # waits until each has ended, failed or not
        return [future.result() for future in futures]    # raises the first failure in order
    except BaseException as exc:
        if not isinstance(exc, Exception):
            for place in places:
                place.abort()
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=False)


def same_place(a: ImagePlace, b: ImagePlace) -> bool:
    return a.label == b.label


def _artifact_type(manifest: ManifestBytes) -> str | None:
    data = load_json_object(manifest.raw, "manifest")
    config = data.get("config")
    kind = data.get("artifactType") or (config.get("mediaType") if isinstance(config, dict) else None)
    return kind if isinstance(kind, str) else None


def add_to_referrers_tag(place: ImagePlace, subject: str, referrer: Descriptor) -> None:
    """The referrers tag schema: read the subject's index tag, add `referrer`, write it back."""
    found = place.manifest(referrer.digest)
    add_manifests_to_referrers_tag(place, subject, [(referrer, found)])


def add_manifests_to_referrers_tag(place: ImagePlace, subject: str,
                                   referrers: Sequence[tuple[Descriptor, ManifestBytes | None]]) -> None:
    """The referrers tag schema for several referrers at once, each with its manifest (already stored;
    its artifact type is recorded): one read of the subject's index tag, one merge, one write."""
    tag = referrers_tag(subject)
    try:
        kinds = [(referrer, _artifact_type(manifest) if manifest is not None else None)
                 for referrer, manifest in referrers]
        index = index_with_referrers(place.manifest(tag), kinds)
    except MalformedError as exc:
        raise place.malformed(f"referrers index {tag}", exc) from None
    place.put_manifest(index, [tag])


class LocalPlace:
    """What places on this machine share: attachments by the referrers tag, and no transfer worth a retry."""

    def referrers(self: ImagePlace, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        try:
            return referrers_in(self.manifest(referrers_tag(subject)), artifact_type, subject)
        except MalformedError as exc:
            raise self.malformed(f"referrers index of {subject}", exc) from None

    def add_referrer(self: ImagePlace, subject: str, referrer: Descriptor) -> None:
        add_to_referrers_tag(self, subject, referrer)

    def add_referrers(self: ImagePlace, subject: str, referrers: Sequence[tuple[Descriptor, ManifestBytes]]) -> None:
        add_manifests_to_referrers_tag(self, subject, referrers)

    def retrying(self, transfer: Callable[[], T], doing: str) -> T:
        return transfer()

    def malformed(self, what: str, exc: MalformedError) -> ImageBuildError:
        return StoreError(f"{what} in {self.label} is malformed: {exc}", hint="bake or pull the image again")

    def abort(self) -> None:
        pass   # a local read or write ends by itself within moments


# -- a name in the local OCI layout ---------------------------------------------------------

class LayoutPlace(LocalPlace):
    """One image name in the local store: its tags are the store's `NAME:TAG` refs.
    Without a name, a tag is a whole ref name (an exported layout's tags are bare)."""

    def __init__(self, store: LayoutStore, name: str = ""):
        self.store = store
        self.name = name
        self.label = f"local store {store.root} ({name})" if name else f"layout {store.root}"

    def _ref(self, tag: str) -> str:
        return f"{self.name}:{tag}" if self.name else tag

    def tags(self) -> list[str]:
        if not self.store.exists():
            return []
        if not self.name:
            return sorted(self.store.refs())
        prefix = self.name + ":"
        return sorted(ref[len(prefix):] for ref in self.store.refs() if ref.startswith(prefix))

    def manifest(self, reference: str) -> ManifestBytes | None:
        if not self.store.exists():
            return None
        if is_digest(reference):
            if not self.store.has_blob(reference):
                return None
            digest = reference
        else:
            descriptor = self.store.refs().get(self._ref(reference))
            if descriptor is None:
                return None
            digest = descriptor.digest
        raw = self.store.read_blob(digest)
        try:
            return manifest_of(raw)
        except (ValueError, AttributeError) as exc:   # not JSON, or JSON but no object
            raise StoreError(f"blob {digest} in the store at {self.store.root} is not a manifest "
                             f"({str(exc).splitlines()[0][:80]})", hint="bake or pull the image again") from None

    def put_manifest(self, manifest: ManifestBytes, tags: Sequence[str] = (),
                     platform: Platform | None = None) -> None:
        self.store.put_blob(manifest.raw)
        for tag in tags:
            self.store.tag(self._ref(tag), descriptor_of(manifest, platform))

    def has_blob(self, digest: str) -> bool:
        return self.store.exists() and self.store.has_blob(digest)

    def open_blob(self, descriptor: Descriptor) -> ContextManager[BinaryIO]:
        # Checked before the first byte: an upload announces the descriptor's size, and a blob of
        # another size would break off mid-request or be refused only after it all travelled.
        size = self.store.blob_size(descriptor.digest)
        if size != descriptor.size:
            raise StoreError(f"blob {descriptor.digest} in the store at {self.store.root} is {size} bytes, "
                             f"but the image's manifest says {descriptor.size}", hint="bake or pull the image again")
        return self.store.open_blob(descriptor.digest)

    def put_blob(self, descriptor: Descriptor, opener: Opener) -> int:
        with opener() as reader:
            _, size = self.store.put_blob_stream(reader, Digest(descriptor.digest))
        return size

    def mount(self, descriptor: Descriptor, source: ImagePlace) -> bool:
        return False

    def remove(self, tag: str) -> bool:
        self.store.untag(self._ref(tag))
        return True


# -- a repository of a registry ----------------------------------------------------------------

class RegistryPlace:
    """One repository of a registry, over registry/client.py (which counts, retries and authenticates)."""

    def __init__(self, client: RegistryClient, repository: str):
        self.client = client
        self.repository = repository
        self.label = f"{client.host}/{repository}"
        # Upload sessions a mount answered with 202 (distribution 2.8 does when the source lacks the blob),
        # kept for the upload that follows so it needs no new session.
        self._sessions: dict[str, str] = {}

    @property
    def host(self) -> str:
        return self.client.host

    def tags(self) -> list[str]:
        return self.client.list_tags(self.repository)

    def manifest(self, reference: str) -> ManifestBytes | None:
        return self.client.get_manifest(self.repository, reference)

    def put_manifest(self, manifest: ManifestBytes, tags: Sequence[str] = (),
                     platform: Platform | None = None) -> None:
        for reference in tags or [manifest.digest]:
            self.client.put_manifest(self.repository, reference, manifest.raw, manifest.media_type)

    def has_blob(self, digest: str) -> bool:
        return self.client.blob_exists(self.repository, digest)

    @contextlib.contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[BinaryIO]:
        with self.client.blob_chunks(self.repository, descriptor.digest, descriptor.size) as chunks:
            yield VerifyingIterReader(chunks, descriptor.digest, descriptor.size, _arrived_altered)

    def put_blob(self, descriptor: Descriptor, opener: Opener) -> int:
        # The caller has just seen the blob missing (copy asks has_blob first): no second HEAD.
        outcome = self.client.upload_blob(self.repository, descriptor, opener, absent=True,
                                          location=self._sessions.pop(descriptor.digest, None))
        return outcome.bytes_sent

    def mount(self, descriptor: Descriptor, source: ImagePlace) -> bool:
        if not isinstance(source, RegistryPlace) or source.host != self.host or \
                source.repository == self.repository:
            return False
        try:
            location = self.client.mount_blob(self.repository, descriptor.digest, source.repository)
        except RegistryError as exc:
            if exc.status is not None and exc.status < 500 and exc.status != 429:
                raise
            return False     # a failed mount costs only the upload that follows
        if location is None:
            return True
        self._sessions[descriptor.digest] = location
        return False

    def referrers(self, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        found = self.client.list_referrers(self.repository, subject, artifact_type, max_entries=MAX_REFERRERS)
        try:
            if found is None:
                return referrers_in(self.manifest(referrers_tag(subject)), artifact_type, subject)
            return referrer_descriptors(found, artifact_type, subject)
        except MalformedError as exc:
            raise self.malformed(f"referrers index of {subject}", exc) from None

    def add_referrer(self, subject: str, referrer: Descriptor) -> None:
        # A registry with the referrers API indexes what it is given; the tag is for those without.
        if self.client.list_referrers(self.repository, subject, max_entries=MAX_REFERRERS) is None:
            add_to_referrers_tag(self, subject, referrer)

    def add_referrers(self, subject: str, referrers: Sequence[tuple[Descriptor, ManifestBytes]]) -> None:
        # The client remembers a repository without the referrers API: asked once per command, not per referrer.
        if referrers and self.client.list_referrers(self.repository, subject, max_entries=MAX_REFERRERS) is None:
            add_manifests_to_referrers_tag(self, subject, referrers)

    def retrying(self, transfer: Callable[[], T], doing: str) -> T:
        return self.client.retry_transfer(transfer, f"{doing} from {self.label}")

    def remove(self, tag: str) -> bool:
        digest = self.client.head_manifest(self.repository, tag)
        return digest is None or self.client.delete_manifest(self.repository, digest)

    def malformed(self, what: str, exc: MalformedError) -> ImageBuildError:
        return RegistryError(f"registry {self.host} sent a malformed {what} for {self.label}: {exc}",
                             hint="the registry, or what pushed the image, is broken; tell its operators")

    def abort(self) -> None:
        self.client.transport.abort()


def _arrived_altered(digest: str) -> Exception:
    return RegistryError(f"blob {digest} arrived with different content", hint="retry")

