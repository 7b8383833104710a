"""The one way an image moves between two places: push, pull, promote and `oci:DIR` all come here.

An image or an index is walked children first: every manifest is parsed
field by field (a malformed one is the source's error, naming it); each
image's config travels first and is checked against its manifest (its
diff_ids one per layer) before any layer moves; then every blob the target
lacks is mounted (two repositories of one registry) or streamed over, a
bounded number at a time, verified against its digest and size on the way
(a stream longer than its descriptor is refused at the first byte too many);
then the child manifests by digest, and the top manifest last, under its
tags, so a failed copy never leaves a tag pointing at half an image.
Manifest bytes travel exactly as they are, so the digest cannot change.

Ctrl-C or SIGTERM during the parallel part aborts both places' transfers at
once (workers blocked on a socket wake and fail) and waits for no worker,
so an interrupted push ends within a second and sends no further request.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import field
from typing import Callable, Sequence, TypeVar

from imagebuild.errors import StoreError
from imagebuild.frozen import mutable
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import (MAX_CONFIG_BYTES, Descriptor, MalformedError, ManifestBytes, ParsedManifest, Platform,
                                  parse_config)
from imagebuild.stores.place import ImagePlace, blobs_of, children_of, descriptor_of, in_parallel, same_place
from imagebuild.stores.signature_tags import merged_layers, signature_layers, signature_tag, write_signatures

T = TypeVar("T")
IMAGE_CONFIG_TYPES = (mt.OCI_CONFIG, mt.DOCKER_CONFIG)

DEFAULT_PARALLEL = 4
# (how: "copied" | "mounted", blob): one event per blob that moved, for progress lines.
BlobEvent = Callable[[str, Descriptor], None] | None
# What one attachment (a referrer carried with its image) may hold in all: ours hold an SBOM or an
# envelope of some kB to MiB (stores/attachments.MAX_PAYLOAD), foreign tools' signatures less. A place
# listing a referrer of more names no attachment, and could make a copy fetch without end.
MAX_ATTACHMENT_BYTES = 64 * 1024 * 1024

# A repository of the target's registry that may lend a blob by mount, besides the source.
MountHint = Callable[[Digest], ImagePlace | None] | None


@mutable
class CopyResult:
    descriptor: Descriptor            # the top manifest, as the target now holds it
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    blob_bytes: int = 0               # blob bytes streamed to the target
    manifest_bytes: int = 0           # manifest bytes written to the target
    attachments: list[Digest] = field(default_factory=list)

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest


def copy(source: ImagePlace, target: ImagePlace, image: str | ManifestBytes, tags: Sequence[str] = (), *,
         attachments: bool | Sequence[str] = False, mount_hint: MountHint = None,
         parallel: int = DEFAULT_PARALLEL, progress: BlobEvent = None,
         platform: Platform | None = None, present: frozenset[str] = frozenset()) -> CopyResult:
    """Make `image` (a digest, or manifest bytes the caller holds) and all it names present in `target`,
    tagged `tags`. `attachments`: True carries every manifest whose subject it is, a list only those
    artifact types (the cosign signature type naming the `sha256-<hex>.sig` tag, which True carries too).
    `platform`: what a layout target's index records beside the tags. `present`: digests of blobs this
    copy has just seen in (or sent to) `target`, skipped without asking again."""
    top = image if isinstance(image, ManifestBytes) else _manifest(source, image)
    if same_place(source, target):
        # A retag: everything is there already, so only the tags are written (no blob moves).
        if tags:
            target.put_manifest(top, tags, platform)
        return CopyResult(descriptor_of(top, platform), manifest_bytes=len(top.raw) if tags else 0)
    children = [_manifest(source, child.digest) for child in _parsed(source, top, children_of)]
    # What travels with the image is read and checked before anything is written: a place that lists
    # a loop, too many referrers or an absurd signature manifest leaves the target as it was.
    carried = _attachments_of(source, top, children, attachments) if attachments else None
    blobs: dict[str, Descriptor] = {}
    for manifest in children + [top]:
        for blob in _parsed(source, manifest, blobs_of):
            blobs.setdefault(blob.digest, blob)
    result = CopyResult(descriptor_of(top, platform))

    def one(blob: Descriptor) -> tuple[str, int]:
        if blob.digest in present:
            return "skipped", 0
        how, sent = _deliver(source, target, blob, mount_hint)
        if progress and how != "skipped":
            progress(how, blob)
        return how, sent

    def tally(outcomes) -> None:
        for how, sent in outcomes:
            if how == "skipped":
                result.blobs_skipped += 1
            elif how == "mounted":
                result.blobs_mounted += 1
            else:
                result.blobs_copied += 1
                result.blob_bytes += sent

    # Each image's config is read first and checked, so a config that does not fit its image costs no
    # layer download; it is written after the layers, so a refused layer leaves no config behind either.
    configs: list[tuple[Descriptor, bytes]] = []
    fetched: dict[str, bytes | None] = {}
    for manifest in children + [top]:
        config = _image_config(manifest)
        if config is None:
            continue
        if config.digest in fetched:     # two images of an index sharing one config: each checked
            if fetched[config.digest] is not None:
                _check_config(source, manifest, fetched[config.digest])
            continue
        blobs.pop(config.digest, None)
        how, raw = _fetch_config(source, target, manifest, mount_hint)
        fetched[config.digest] = raw
        if raw is not None:
            configs.append((config, raw))
        else:
            tally([(how, 0)])
            if progress and how != "skipped":
                progress(how, config)
    if parallel <= 1:
        tally(map(one, blobs.values()))      # in this thread: the first failure ends the copy there
    else:
        _in_parallel(source, target, parallel, one, list(blobs.values()), tally)
    for config, raw in configs:
        tally([("copied", target.put_blob(config, lambda raw=raw: contextlib.nullcontext(io.BytesIO(raw))))])
        if progress:
            progress("copied", config)
    for child in children:
        target.put_manifest(child)
        result.manifest_bytes += len(child.raw)
    target.put_manifest(top, tags, platform)
    result.manifest_bytes += len(top.raw)
    if carried is not None:
        referrers, signatures = carried
        _copy_referrers(source, target, referrers, result, mount_hint=mount_hint, parallel=parallel,
                        progress=progress)
        if signatures is not None:
            one = _copy_signatures(source, target, top.digest, signatures, mount_hint=mount_hint,
                                   parallel=parallel, progress=progress)
            if one is not None:
                _add_carried(result, one)
    return result


def _copy_referrers(source: ImagePlace, target: ImagePlace,
                    referrers: Sequence[tuple[Digest, Descriptor, ManifestBytes]], result: CopyResult,
                    **options) -> None:
    """The referrers, copied at once (a bounded number: each is independent of the others), then each
    subject's recorded in one read-merge-write of its referrers index, not one per referrer."""
    # A blob several referrers name (the empty config every attachment has) is delivered once, first.
    named = [blob for _, _, manifest in referrers if manifest.media_type not in mt.INDEX_TYPES
             for blob in _parsed(source, manifest, blobs_of)]
    shared = {blob.digest: blob for blob in named if sum(other.digest == blob.digest for other in named) > 1}
    copied = in_parallel([lambda blob=blob: _deliver(source, target, blob, options.get("mount_hint"))
                          for blob in shared.values()], [source, target])
    for blob, (how, sent) in zip(shared.values(), copied):
        if how != "skipped" and options.get("progress"):
            options["progress"](how, blob)
        result.blob_bytes += sent
    copies = in_parallel([lambda manifest=manifest: copy(source, target, manifest, present=frozenset(shared),
                                                         **options)
                          for _, _, manifest in referrers], [source, target])
    by_subject: dict[str, list[tuple[Descriptor, ManifestBytes]]] = {}
    for (subject, referrer, manifest), one in zip(referrers, copies):
        by_subject.setdefault(str(subject), []).append((referrer, manifest))
        _add_carried(result, one)
    in_parallel([lambda subject=subject, entries=entries: target.add_referrers(subject, entries)
                 for subject, entries in by_subject.items()], [source, target])


def _add_carried(result: CopyResult, carried: CopyResult) -> None:
    result.attachments.append(carried.digest)
    result.blob_bytes += carried.blob_bytes
    result.manifest_bytes += carried.manifest_bytes


def _attachments_of(source: ImagePlace, top: ManifestBytes, children: Sequence[ManifestBytes],
                    attachments: bool | Sequence[str]
                    ) -> tuple[list[tuple[Digest, Descriptor, ManifestBytes]], ManifestBytes | None]:
    """The referrers to carry, of `top` and of each of its `children` (an index's platforms have their own:
    their SBOMs), each as (subject, descriptor, manifest), its blobs bounded as an attachment's; and
    `top`'s signature manifest (checked); read from `source`. The source's malformed error when any
    does not fit."""
    wanted = [None] if attachments is True else list(attachments)
    referrers: list[tuple[Digest, Descriptor, ManifestBytes]] = []
    for subject, artifact_type in ((one.digest, kind) for one in [*children, top] for kind in wanted):
        for referrer in source.referrers(subject, artifact_type):
            manifest = _manifest(source, referrer.digest)
            if manifest.digest != referrer.digest:
                raise source.malformed(f"referrer {referrer.digest}",
                                       MalformedError(f"its manifest's digest is {manifest.digest}"))
            size = sum(blob.size for blob in _parsed(source, manifest, blobs_of))
            if size > MAX_ATTACHMENT_BYTES:
                raise source.malformed(f"referrer {referrer.digest}", MalformedError(
                    f"its blobs are {size} bytes, over the {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB "
                    "an attachment may hold"))
            referrers.append((subject, referrer, manifest))
    signatures = None
    if attachments is True or mt.COSIGN_SIMPLESIGNING in attachments:
        signatures = source.manifest(signature_tag(top.digest))
        signature_layers(source, signatures)     # checked: how many blobs it names, and their sizes
    return referrers, signatures


def _copy_signatures(source: ImagePlace, target: ImagePlace, subject: str, theirs: ManifestBytes,
                     **options) -> CopyResult | None:
    """The subject's cosign signature manifest `theirs` (tagged `sha256-<hex>.sig` in `source`, no
    referrer: found by name). Signatures the target holds already stay: the two sets are merged, never
    replaced."""
    tag = signature_tag(subject)
    ours = target.manifest(tag)
    if ours is not None and ours.digest == theirs.digest:
        return None
    carried = copy(source, target, theirs, [] if ours else [tag], **options)
    if ours is not None:
        write_signatures(target, subject, merged_layers(signature_layers(target, ours),
                                                        signature_layers(source, theirs)))
    return carried


def copy_blobs(source: ImagePlace, target: ImagePlace, blobs: Sequence[Descriptor],
               parallel: int = DEFAULT_PARALLEL) -> CopyResult:
    """Only these blobs, as `copy` moves them (skipped, mounted or streamed and verified), no manifest:
    for a store that holds an image whose layers lie in a registry, before an output reads them."""
    result = CopyResult(Descriptor(mt.OCI_EMPTY, Digest.of(b"{}"), 2))

    def tally(outcomes) -> None:
        for how, sent in outcomes:
            if how == "copied":
                result.blobs_copied += 1
                result.blob_bytes += sent
            elif how == "mounted":
                result.blobs_mounted += 1
            else:
                result.blobs_skipped += 1

    def one(blob: Descriptor) -> tuple[str, int]:
        return _deliver(source, target, blob, None)

    _in_parallel(source, target, max(1, parallel), one, list(blobs), tally)
    return result


def _in_parallel(source: ImagePlace, target: ImagePlace, parallel: int, one, blobs: list[Descriptor],
                 tally) -> None:
    from concurrent.futures import ThreadPoolExecutor  # here: a promotion within a place copies nothing

    pool = ThreadPoolExecutor(max_workers=parallel)
    try:
        tally(pool.map(one, blobs))
    except Exception:
        # One blob failed: start no other, let those under way end, so its error is the only news.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    except BaseException:
        # Ctrl-C or SIGTERM: stop now. Aborting wakes the workers blocked on a socket and keeps them
        # from sending another chunk; waiting for them could take a stalled request's whole timeout.
        source.abort()
        target.abort()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _parsed(place: ImagePlace, manifest: ManifestBytes, read: Callable[[ManifestBytes], T]) -> T:
    try:
        return read(manifest)
    except MalformedError as exc:
        raise place.malformed(f"manifest {manifest.digest}", exc) from None


def _image_config(manifest: ManifestBytes) -> Descriptor | None:
    """The config of an image manifest (already parsed once, so valid); None for an index or an artifact."""
    if manifest.media_type in mt.INDEX_TYPES:
        return None
    config = ParsedManifest.parse(manifest.raw, manifest.media_type).config
    return config if config.media_type in IMAGE_CONFIG_TYPES else None


def _fetch_config(source: ImagePlace, target: ImagePlace, manifest: ManifestBytes,
                  mount_hint: MountHint) -> tuple[str, bytes | None]:
    """An image's config: "skipped" or "mounted" when the target has or borrows it, else its bytes, read whole
    from the source (a config is small) and checked against the manifest, for the caller to write."""
    parsed = ParsedManifest.parse(manifest.raw, manifest.media_type)
    config = parsed.config
    if target.has_blob(config.digest):
        return "skipped", None
    if _mounted(source, target, config, mount_hint):
        return "mounted", None     # within one registry, which already holds it next to this image
    what = f"config {config.digest} of manifest {manifest.digest}"
    if config.size > MAX_CONFIG_BYTES:
        raise source.malformed(what, MalformedError(
            f"it claims {config.size} bytes, over the {MAX_CONFIG_BYTES // (1024 * 1024)} MiB limit"))

    def read() -> bytes:
        with source.open_blob(config) as reader:
            return reader.read()

    raw = source.retrying(read, f"reading {what}")
    _check_config(source, manifest, raw)
    return "copied", raw


def _check_config(source: ImagePlace, manifest: ManifestBytes, raw: bytes) -> None:
    """An image config's shape, and one diff_id per layer of `manifest`; the source's error else."""
    parsed = ParsedManifest.parse(manifest.raw, manifest.media_type)
    try:
        diff_ids = parse_config(raw)["rootfs"]["diff_ids"]
        if len(diff_ids) != len(parsed.layers):
            raise MalformedError(f"it lists {len(diff_ids)} diff_ids for {len(parsed.layers)} layers")
    except MalformedError as exc:
        raise source.malformed(f"config {parsed.config.digest} of manifest {manifest.digest}", exc) from None


def _mounted(source: ImagePlace, target: ImagePlace, blob: Descriptor, mount_hint: MountHint) -> bool:
    lender = mount_hint(blob.digest) if mount_hint else None
    return any(candidate is not None and target.mount(blob, candidate) for candidate in (lender, source))


def _manifest(place: ImagePlace, digest: str) -> ManifestBytes:
    found = place.manifest(digest)
    if found is None:
        raise StoreError(f"{place.label} does not hold manifest {digest}", hint="push or pull the image again")
    return found


def _deliver(source: ImagePlace, target: ImagePlace, blob: Descriptor, mount_hint: MountHint) -> tuple[str, int]:
    """One blob: skipped when the target has it, else mounted, else streamed (verified)."""
    if target.has_blob(blob.digest):
        return "skipped", 0
    if _mounted(source, target, blob, mount_hint):
        return "mounted", 0
    sent = source.retrying(lambda: target.put_blob(blob, lambda: source.open_blob(blob)),
                           f"copying blob {blob.digest}")
    if sent not in (0, blob.size):   # 0: a registry found the blob complete after a failed attempt
        raise StoreError(f"blob {blob.digest} is {sent} bytes, not the {blob.size} its descriptor says",
                         hint="the manifest and its blob disagree; bake or push the image again")
    return "copied", sent
