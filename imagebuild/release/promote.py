"""Promotion: the same digest, from environment to environment, with a record.

Environments are promoted in list order. An image enters environment N only
after it was promoted to environment N-1; the first takes any clean image. A
promotion within one repository is a retag (GET the manifest bytes, PUT them
unchanged under the environment's tag), so no blob moves. An environment that
names another registry or repository gets a copy with the same digest.

Every promotion leaves a record in the image's home repository, so `status`
and `history` read the same answer from any machine: an OCI artifact manifest
(config and single layer the empty descriptor, `subject` the promoted image)
tagged `promotion-<environment>-<sequence>-<first 12 hex of the image digest>`,
with the facts in annotations. The digest in the tag lets the order rule and
the rollback check find an image's records from the tag list alone.
Registries without a referrers API (distribution 2.8) keep these tags like any
other. Without a registry, the local store holds the same manifests and tags.

A promotion is an ordered transaction (docs/registry.md): the record is written
and read back first, then checked against rivals for the same sequence number,
and only then is the environment's tag moved, and only if it still holds what
it held at the start. A record is honoured only when its content matches its
tag and it is well formed; any other manifest under a record tag is ignored
with a warning.
"""

from __future__ import annotations

import json
import re
import sys
import time as clock
from dataclasses import asdict, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from imagebuild.contract import ANNOTATION_DIRTY
from imagebuild.errors import (ImageBuildError, PromotionConflictError, PromotionError, RegistryError, StoreError,
                              UserError, quoted)
from imagebuild.frozen import frozen, mutable
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest, is_digest
from imagebuild.oci.model import (ANNOTATION_CREATED, ANNOTATION_VERSION, EMPTY_DESCRIPTOR, EMPTY_JSON,
                                  MalformedError, ManifestBytes, load_json_object)
from imagebuild.oci.reference import Reference
from imagebuild.recipe.model import Environment, environment_index
from imagebuild.stores.layout import DISK_SUFFIX, LayoutStore
from imagebuild.stores.place import (ImagePlace, LayoutPlace, RegistryPlace, blobs_of, in_parallel, put_bytes,
                                    same_place)
from imagebuild.stores.reserved_tags import RECORD_PREFIX
from imagebuild.stores.signature_tags import signature_tag

if TYPE_CHECKING:
    from datetime import datetime

    from imagebuild.evidence.policy import CheckResult
    from imagebuild.registry.client import RegistryClient

RECORD_ARTIFACT_TYPE = "application/vnd.imagebuild.promotion.v1+json"
ANN = "dev.imagebuild.promotion."
ANN_ENVIRONMENT = ANN + "environment"
ANN_SEQUENCE = ANN + "sequence"
ANN_DIGEST = ANN + "digest"
ANN_VERSION = ANN + "version"
ANN_TARGET = ANN + "target"
ANN_PREVIOUS = ANN + "previous"
ANN_CHECKS = ANN + "checks"          # the policy checks that passed, comma-separated
_RECORD_TAG = re.compile(r"^promotion-(?P<env>.+)-(?P<seq>\d{6,})-(?P<short>[0-9a-f]{12})$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# How long a promotion waits for a rival with the same sequence to settle (it withdraws, or moves the tag),
# and how often it looks meanwhile. A rival settles within a few requests; one that crashed never does.
RIVAL_WAIT = (20.0, 0.2)
Warn = Callable[[str], None]


def warn_on_stderr(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


# -- records ----------------------------------------------------------------------------

@frozen
class Record:
    environment: str
    sequence: int
    digest: Digest
    version: str
    time: str
    target: str
    previous: Digest | None = None
    checks: tuple[str, ...] = ()    # the environment's policy checks this promotion passed
    rollback: bool = False          # back to a digest the environment had before; set by `history`

    @property
    def tag(self) -> str:
        return record_tag(self.environment, self.sequence, self.digest)

    def to_dict(self) -> dict:
        return {**asdict(self), "checks": list(self.checks)}


def record_tag(environment: str, sequence: int, digest: str) -> str:
    # The short digest in the tag lets a rule find an image's records from the tag list alone.
    return f"{RECORD_PREFIX}{environment}-{sequence:06d}-{Digest(digest).short}"


def record_manifest(record: Record, subject: ManifestBytes) -> ManifestBytes:
    annotations = {
        ANNOTATION_CREATED: record.time, ANN_ENVIRONMENT: record.environment,
        ANN_SEQUENCE: str(record.sequence), ANN_DIGEST: record.digest, ANN_VERSION: record.version,
        ANN_TARGET: record.target,
    }
    if record.previous:
        annotations[ANN_PREVIOUS] = record.previous
    if record.checks:
        annotations[ANN_CHECKS] = ",".join(record.checks)
    manifest = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": RECORD_ARTIFACT_TYPE,
        "config": EMPTY_DESCRIPTOR.to_dict(), "layers": [EMPTY_DESCRIPTOR.to_dict()],
        "subject": {"mediaType": subject.media_type, "digest": str(subject.digest), "size": len(subject.raw)},
        "annotations": annotations,
    }
    raw = canonical_json(manifest)
    return ManifestBytes(raw, mt.OCI_MANIFEST, Digest.of(raw))


def manifest_data(place: ImagePlace, manifest: ManifestBytes) -> dict:
    """A manifest read from `place` as a JSON object whose annotations are an object of strings;
    anything else is the place's malformed error (exit 5 from a registry, 4 from the store)."""
    try:
        data = load_json_object(manifest.raw, "manifest")
        annotations = data.get("annotations")
        if annotations is not None and not (isinstance(annotations, dict) and
                                            all(isinstance(v, str) for v in annotations.values())):
            raise MalformedError("the manifest has annotations that are not an object of strings")
    except MalformedError as exc:
        raise _malformed(place, manifest, exc) from None
    return data


def _malformed(place: ImagePlace, manifest: ManifestBytes, exc: MalformedError) -> ImageBuildError:
    return place.malformed(f"manifest {manifest.digest}", exc)


def parse_record(raw: bytes) -> Record | None:
    """The record in a manifest; None when it is none (another artifact, or its facts incomplete)."""
    try:
        data = json.loads(raw)
        if data.get("artifactType") != RECORD_ARTIFACT_TYPE:
            return None
        a = data["annotations"]
        previous = a.get(ANN_PREVIOUS)
        checks = tuple(c for c in a.get(ANN_CHECKS, "").split(",") if c)
        return Record(environment=a[ANN_ENVIRONMENT], sequence=int(a[ANN_SEQUENCE]), digest=Digest(a[ANN_DIGEST]),
                      version=a.get(ANN_VERSION, ""), time=a.get(ANNOTATION_CREATED, ""),
                      target=a.get(ANN_TARGET, ""), previous=Digest(previous) if previous else None, checks=checks)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, UserError):
        return None


def record_tags(tags: Sequence[str], environment: str, digest: str | None = None) -> list[tuple[int, str]]:
    """(sequence, tag) of one environment's records, oldest first; only those of `digest` when given."""
    short = Digest(digest).short if digest else None
    out = []
    for tag in tags:
        match = _RECORD_TAG.match(tag)
        if match and match.group("env") == environment and short in (None, match.group("short")):
            out.append((int(match.group("seq")), tag))
    return sorted(out)


def record_problem(tag: str, manifest: ManifestBytes, record: Record | None,
                   image: ManifestBytes | None = None) -> str | None:
    """Why the manifest under record tag `tag` is not an honest record (of `image`, when given); None when it is."""
    match = _RECORD_TAG.match(tag)
    if match is None or record is None:
        return "it is not a promotion record"
    try:
        data = json.loads(manifest.raw)
        subject = data.get("subject") or {}
        empty = {k: EMPTY_DESCRIPTOR.to_dict()[k] for k in ("mediaType", "digest", "size")}
        if manifest.media_type != mt.OCI_MANIFEST or data.get("mediaType") != mt.OCI_MANIFEST or \
                data.get("artifactType") != RECORD_ARTIFACT_TYPE:
            return "its media type or artifact type is not a record's"
        if {k: (data.get("config") or {}).get(k) for k in empty} != empty or \
                [{k: (layer or {}).get(k) for k in empty} for layer in data.get("layers") or []] != [empty]:
            return "its config and layers are not the empty descriptor"
        if subject.get("mediaType") not in mt.ALL_MANIFEST_TYPES or not isinstance(subject.get("size"), int) \
                or subject["size"] <= 0 or subject.get("digest") != record.digest:
            return "its subject is not the image it names"
    except (ValueError, AttributeError, TypeError):
        return "it is not a promotion record"
    if (record.environment, record.sequence, record.digest.short) != \
            (match.group("env"), int(match.group("seq")), match.group("short")):
        return (f"its content (environment {record.environment}, sequence {record.sequence}, "
                f"{record.digest.short}) does not match its tag")
    if image is not None and (subject["digest"], subject["size"], subject["mediaType"]) != \
            (image.digest, len(image.raw), image.media_type):
        return f"its subject is not the image {image.digest.short}"
    return None


def read_record(home: ImagePlace, tag: str, image: ManifestBytes | None = None,
                warn: Warn | None = None) -> Record | None:
    """The record under `tag` when it is honest; None (with a warning) when not, or gone."""
    manifest = home.manifest(tag)
    if manifest is None:
        return None       # withdrawn since the tags were listed
    manifest_data(home, manifest)   # a garbled answer is an error, not a dishonest record
    record = parse_record(manifest.raw)
    problem = record_problem(tag, manifest, record, image)
    if problem is not None:
        (warn or warn_on_stderr)(f"{home.label}:{tag} ignored: {problem}")
        return None
    return record


def read_records(home: ImagePlace, environment: str, tags: Sequence[str] | None = None,
                 latest_only: bool = False, digest: str | None = None, image: ManifestBytes | None = None,
                 warn: Warn | None = None) -> list[Record]:
    """One environment's honest records (of `digest` only, when given), newest first;
    `latest_only` stops at the newest honest one."""
    found = record_tags(home.tags() if tags is None else tags, environment, digest)
    newest_first = [tag for _, tag in reversed(found)]
    if latest_only:
        # Usually the newest is honest: reading one at a time stops after a single request.
        for tag in newest_first:
            record = read_record(home, tag, image, warn)
            if record is not None and (digest is None or record.digest == digest):
                return [record]
        return []
    read = in_parallel([lambda tag=tag: read_record(home, tag, image, warn) for tag in newest_first], [home])
    return [r for r in read if r is not None and (digest is None or r.digest == digest)]


# -- the promotion ------------------------------------------------------------------------

@mutable
class Target:
    repository: ImagePlace
    tag: str

    @property
    def label(self) -> str:
        return f"{self.repository.label}:{self.tag}"


@mutable
class PromotionResult:
    environment: str
    digest: Digest
    version: str
    source: str
    target: str
    action: str                     # "retag" | "copy" | "none" (already there)
    dry_run: bool
    sequence: int
    previous: Digest | None = None
    record: str | None = None
    rollback: bool = False
    blobs: dict = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    disk: Digest | None = None      # the digest of the image's disk (bake --format disk), carried along
    checks: list[dict] = field(default_factory=list)   # the target environment's policy checks, each passed

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_image(home: ImagePlace, image: str, name: str | None = None) -> ManifestBytes:
    """IMAGE as a version tag, NAME:TAG, a digest or NAME@DIGEST, looked up in `home`."""
    reference = image
    if "@" in image:
        reference = image.rpartition("@")[2]
    elif not is_digest(image) and ":" in image:
        given, _, reference = image.rpartition(":")
        given_name = given.rsplit("/", 1)[-1]
        if name and given_name != name.rsplit("/", 1)[-1]:
            raise UserError(f"{image!r} is not an image of {name!r}", hint=f"name a version of {name}")
    found = home.manifest(reference)
    if found is None:
        raise UserError(f"no image {quoted(image)} in {home.label}",
                        hint="push it first with `imagebuild bake --push` or `imagebuild push`")
    manifest_data(home, found)
    return found


def image_version(manifest: ManifestBytes, place: ImagePlace) -> str | None:
    """The version annotation of a manifest read from `place` (checked: a garbled one is `place`'s error)."""
    return (manifest_data(place, manifest).get("annotations") or {}).get(ANNOTATION_VERSION)


def marked_dirty(home: ImagePlace, manifest: ManifestBytes) -> bool:
    """The dirty mark in the manifest's annotations or the config's labels (bake writes both)."""
    if (manifest_data(home, manifest).get("annotations") or {}).get(ANNOTATION_DIRTY) == "true":
        return True
    return (image_settings(home, manifest).get("Labels") or {}).get(ANNOTATION_DIRTY) == "true"


def image_settings(place: ImagePlace, manifest: ManifestBytes) -> dict:
    """The runtime settings (`config` object: Labels, ExposedPorts, ...) of an image manifest's config,
    read from `place` (checked: a garbled one is `place`'s error); {} for an index."""
    configs = [b for b in blobs_of(manifest) if b.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG)][:1]
    for config in configs:
        with place.open_blob(config) as reader:
            raw = reader.read()
        try:
            settings = load_json_object(raw, "image config").get("config") or {}
            if not isinstance(settings, dict) or not isinstance(settings.get("Labels") or {}, dict) \
                    or not isinstance(settings.get("ExposedPorts") or {}, dict):
                raise MalformedError("the image config's settings, Labels or ExposedPorts are not objects")
        except (MalformedError, AttributeError) as exc:
            raise place.malformed(f"config {config.digest}", MalformedError(str(exc))) from None
        return settings
    return {}


def check_policy(environments: Sequence[Environment], env_index: int, manifest: ManifestBytes,
                 version: str | None, home: ImagePlace, tags: Sequence[str], warn: Warn | None = None) -> None:
    if not version:
        raise PromotionError(f"rule 'versioned images only': {manifest.digest} carries no "
                             f"{ANNOTATION_VERSION} annotation, so its origin is unknown",
                             hint="promote images made by `imagebuild bake`")
    if version.endswith("-dirty"):
        raise PromotionError(f"rule 'clean images only': {version} was baked from a work tree with "
                             "uncommitted changes and can never be promoted",
                             hint="commit, bake and push again")
    if marked_dirty(home, manifest):
        raise PromotionError(f"rule 'clean images only': {version} ({manifest.digest.short}) carries "
                             f"{ANNOTATION_DIRTY}: \"true\", so it was baked from uncommitted changes "
                             "and can never be promoted", hint="commit, bake and push again")
    if env_index == 0:
        return
    previous = environments[env_index - 1].name
    if not read_records(home, previous, tags, latest_only=True, digest=manifest.digest, image=manifest, warn=warn):
        order = " -> ".join(e.name for e in environments)
        raise PromotionError(f"rule 'promotion order' ({order}): {version} ({manifest.digest.short}) was "
                             f"never promoted to {previous}",
                             hint=f"promote it to {previous} first")


def promote(home: ImagePlace, environments: Sequence[Environment], image: str, environment: str, *,
            target_for: Callable[[Environment], Target], name: str | None = None, dry_run: bool = False,
            now: Callable[[], datetime] = lambda: _utc_now(), warn: Warn | None = None,
            wait: tuple[float, float] = RIVAL_WAIT, root: Path | None = None) -> PromotionResult:
    """Promote `image` (found in `home`) to `environment`, after checking the rules and the environment's
    policy (its key files relative to `root`, the recipe's directory).

    The writes, in order: the record (read back), then the environment's tag, only when no rival
    promotion won the same sequence number and the tag still holds what it held at the start."""
    index = environment_index(environments, environment)
    if not _TAG.match(environment) or len(record_tag(environment, 0, EMPTY_DESCRIPTOR.digest)) > 128:
        raise UserError(f"environment name {environment!r} cannot be a tag",
                        hint="use letters, digits, '_', '.' and '-', at most 98 characters")
    target = target_for(environments[index])
    places = (home, target.repository)

    def tag_then_tags() -> tuple[Digest | None, list[str]]:
        # The tag as it is, read before the tag list: what `previous` names, and what the tag must still
        # hold when it is moved. Read first, so a rival whose record this listing misses moves it only later.
        return _digest_at(target), home.tags()

    manifest, (before, tags) = in_parallel([lambda: resolve_image(home, image, name), tag_then_tags], places)
    version = image_version(manifest, home)
    existing = record_tags(tags, environment)
    sequence = (existing[-1][0] + 1) if existing else 1
    # The reads that depend only on the tag list, at once; the rules' verdict comes first.
    _, gates, latest, went_back, disk = in_parallel([
        lambda: check_policy(environments, index, manifest, version, home, tags, warn),
        # The gates read the evidence in `home`, before anything is written: a refusal leaves nothing behind.
        lambda: check_gates(home, manifest, environments[index], version, root),
        lambda: read_records(home, environment, tags, latest_only=True, warn=warn),
        # A rollback returns to a digest this environment had before: read only when it holds another now.
        lambda: before is not None and before != manifest.digest
        and bool(read_records(home, environment, tags, latest_only=True, digest=manifest.digest, warn=warn)),
        lambda: disk_of(home, manifest, version, tags),
    ], places)
    result = PromotionResult(
        environment=environment, digest=manifest.digest, version=version or "", source=home.label,
        target=target.label, action="retag" if same_place(home, target.repository) else "copy",
        dry_run=dry_run, sequence=sequence, previous=before, rollback=went_back,
        checks=[g.to_dict() for g in gates])
    disk_target = Target(target.repository, target.tag + DISK_SUFFIX)
    if latest and latest[0].digest == manifest.digest and before == manifest.digest and \
            (disk is None or _points_at(disk_target, disk)):
        # Promoting what is already there would only add a record that history then shows twice.
        result.action, result.sequence, result.record = "none", latest[0].sequence, latest[0].tag
        result.messages.append(f"{target.label} already holds {manifest.digest} since {latest[0].time} "
                               f"({latest[0].tag}); nothing to do")
        return result
    if result.action == "retag":
        result.messages.append(f"tag {target.label} -> {manifest.digest} (manifest bytes unchanged, no blob moves)")
    else:
        result.messages.append(f"copy {manifest.digest} to {target.label} (each blob: HEAD, then mount, then upload)")
    if disk is not None:
        result.disk = disk.digest
        result.messages.append(f"carry its disk {disk.digest} to {target.label}{DISK_SUFFIX}")
    result.messages.append(f"record {record_tag(environment, sequence, manifest.digest)} in {home.label}")
    if dry_run:
        return result
    record = Record(environment=environment, sequence=sequence, digest=manifest.digest,
                    version=version or "", time=_timestamp(now()), target=target.label, previous=result.previous,
                    checks=tuple(g.name for g in gates))
    # An honest record read from `home` proves its empty config is there: no need to ask again.
    _write_record(home, record, manifest, warn, config_present=bool(latest))
    result.record = record.tag
    _settle_sequence(home, record, target, before, warn, wait)
    if _digest_at(target) != before:
        _withdraw(home, record, warn)
        raise _conflict(record, f"{target.label} moved since this promotion read it")
    # Within one place, copy only writes the tag: the same manifest bytes, and no blob moves.
    moved = carry_image(target, manifest, home, signed=signature_tag(manifest.digest) in tags)
    if result.action == "copy":
        result.blobs = moved
    if disk is not None:
        carry_image(disk_target, disk, home)
    return result


def _write_record(home: ImagePlace, record: Record, image: ManifestBytes, warn: Warn | None,
                  config_present: bool = False) -> None:
    """Write the record and read it back; without it in place, nothing else is written."""
    if not config_present:
        put_bytes(home, EMPTY_JSON)
    home.put_manifest(record_manifest(record, image), [record.tag])
    back = read_record(home, record.tag, image, warn)
    # A simultaneous promotion of the same image may have written the same tag: its record serves as well.
    if back is None or back.digest != record.digest:
        raise StoreError(f"promotion record {record.tag} is not in {home.label} after writing it",
                         hint="retry; the environment's tag was not moved")


def _settle_sequence(home: ImagePlace, record: Record, target: Target, before: Digest | None,
                     warn: Warn | None, wait: tuple[float, float]) -> None:
    """Make sure this is the only promotion holding `record.sequence`, or withdraw and raise.

    Two promotions that read the same tag list pick the same sequence. Of the records both can see, the
    one with the smaller digest wins; the other withdraws. A rival with a larger digest may have listed
    the records before this one was written, and gone on: so the smaller waits until that rival has
    either withdrawn (it saw this record) or moved the tag (it did not, and won)."""
    limit, pause = wait
    deadline = clock.monotonic() + limit
    while True:
        rivals = [r for r in _records_at(home, record.environment, record.sequence, warn, besides=record.tag)
                  if r.digest != record.digest]
        if not rivals:
            return
        winner = min(rivals, key=lambda r: str(r.digest))
        if str(winner.digest) < str(record.digest):
            _withdraw(home, record, warn)
            raise _conflict(record, f"its record {winner.tag} has the same sequence and the smaller digest")
        if _digest_at(target) != before:
            _withdraw(home, record, warn)
            raise _conflict(record, f"{target.label} moved since this promotion read it")
        if clock.monotonic() >= deadline:
            _withdraw(home, record, warn)
            raise _conflict(record, f"{winner.tag} holds the same sequence and did not settle within {limit:g}s")
        clock.sleep(pause)


def _records_at(home: ImagePlace, environment: str, sequence: int, warn: Warn | None,
                besides: str) -> list[Record]:
    """The honest records of one sequence number, but the one under `besides` (ours, just read back)."""
    found = [tag for seq, tag in record_tags(home.tags(), environment) if seq == sequence and tag != besides]
    return [r for r in (read_record(home, tag, warn=warn) for tag in found) if r is not None]


def _withdraw(home: ImagePlace, record: Record, warn: Warn | None) -> None:
    """Remove this promotion's record; where the place cannot, it stays as a record that never completed."""
    try:
        removed = home.remove(record.tag)
    except (StoreError, RegistryError) as exc:
        removed, reason = False, exc.one_line()
    else:
        reason = "the place cannot delete manifests"
    if not removed:
        (warn or warn_on_stderr)(f"could not withdraw {home.label}:{record.tag} ({reason}); "
                                 "status shows it as not completed")


def _conflict(record: Record, why: str) -> PromotionConflictError:
    return PromotionConflictError(f"another promotion to {record.environment} won ({why}); this one moved "
                                  "no tag and withdrew its record (retry it)")


def _digest_at(target: Target) -> Digest | None:
    found = target.repository.manifest(target.tag)
    return found.digest if found is not None else None


def carry_image(target: Target, manifest: ManifestBytes, source: ImagePlace, signed: bool = False) -> dict:
    """Copy `manifest` (from `source`) to another place under the target's tag; what moved, as push reports it.

    Across places the image's evidence travels first (every attachment its referrers list, and its
    cosign signature tag when `signed`), then the tag: whoever reads the tag finds the evidence there."""
    from imagebuild.stores.copy import copy as copy_image     # status and history (this module) copy nothing

    counters = getattr(getattr(target.repository, "client", None), "counters", None)
    before = counters.requests if counters else 0
    # One look at the referrers tells whether there is evidence to carry; an image without any is copied as before.
    if same_place(source, target.repository) or not (signed or source.referrers(str(manifest.digest))):
        copied = copy_image(source, target.repository, manifest, [target.tag])
    else:
        copied = copy_image(source, target.repository, manifest, attachments=True)
        target.repository.put_manifest(manifest, [target.tag])
    return {"reference": target.label, "digest": copied.digest,
            "bytes_uploaded": copied.blob_bytes + copied.manifest_bytes, "blobs_uploaded": copied.blobs_copied,
            "blobs_skipped": copied.blobs_skipped, "blobs_mounted": copied.blobs_mounted,
            "requests": counters.requests - before if counters else 0}


def check_gates(home: ImagePlace, manifest: ManifestBytes, env: Environment, version: str | None,
                root: Path | None) -> list[CheckResult]:
    """The environment's policy checks, each passed; a refusal names every failed one (exit 2)."""
    if env.policy.empty:
        return []
    from imagebuild.evidence.policy import evaluate, refusal

    results = evaluate(home, manifest, env.policy, root or Path.cwd())
    refused = refusal(env.name, f"{version or '-'} ({manifest.digest.short})", results)
    if refused is not None:
        message, what_to_do = refused
        raise PromotionError(message, hint=what_to_do)
    return results


def disk_of(home: ImagePlace, manifest: ManifestBytes, version: str | None,
            tags: Sequence[str]) -> ManifestBytes | None:
    """The disk baked from this image (`VERSION-disk`, its subject this digest), if there is one."""
    if not version:
        return None
    from imagebuild.oci.reference import tag_for

    tag = tag_for(version) + DISK_SUFFIX
    if tag not in tags:
        return None
    disk = home.manifest(tag)
    if disk is None:
        return None
    data = manifest_data(home, disk)
    subject = data.get("subject")
    if subject is not None and not isinstance(subject, dict):
        raise _malformed(home, disk, MalformedError("the manifest has a subject that is not an object"))
    if data.get("artifactType") != mt.IMAGEBUILD_DISK or (subject or {}).get("digest") != manifest.digest:
        return None
    return disk


def _points_at(target: Target, manifest: ManifestBytes) -> bool:
    found = target.repository.manifest(target.tag)
    return found is not None and found.digest == manifest.digest


def _utc_now() -> datetime:
    # datetime is imported here: status and history, which share this module, never read the clock
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _timestamp(moment: datetime) -> str:
    from datetime import timezone

    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- reading the state ------------------------------------------------------------------------

@mutable
class EnvironmentStatus:
    environment: str
    target: str
    digest: Digest | None
    version: str | None
    promoted_at: str | None
    sequence: int | None
    note: str | None = None
    checks: tuple[str, ...] = ()    # the policy checks its promotion passed

    def to_dict(self) -> dict:
        return {**asdict(self), "checks": list(self.checks)}


def status(home: ImagePlace, environments: Sequence[Environment],
           target_for: Callable[[Environment], Target], warn: Warn | None = None) -> list[EnvironmentStatus]:
    """Each environment as its tag has it (the truth), with the newest record of that digest.

    A newest record of another digest is a promotion whose tag move never happened (it failed, or
    a rival won): it is reported as not completed, never as what the environment holds."""
    targets = [target_for(env) for env in environments]   # here, not in the threads: it opens clients
    tags = home.tags()
    # Each environment's two or three reads after the tag list, four environments at a time.
    return in_parallel([lambda env=env, target=target: _status_of(home, env, target, tags, warn)
                        for env, target in zip(environments, targets)],
                       [home, *(t.repository for t in targets)], at_once=4)


def _status_of(home: ImagePlace, env: Environment, target: Target, tags: Sequence[str],
               warn: Warn | None) -> EnvironmentStatus:
    current, latest = in_parallel([lambda: target.repository.manifest(target.tag),
                                   lambda: read_records(home, env.name, tags, latest_only=True, warn=warn)],
                                  [home, target.repository])
    record = latest[0] if latest else None
    note = None
    earlier = read_records(home, env.name, tags, latest_only=True, digest=current.digest, warn=warn) \
        if current is not None and record is not None and record.digest != current.digest else []
    if current is None and record is None:
        note = "never promoted"
    elif current is None:
        note = f"tag {target.label} is missing"
    elif earlier:
        # The tag still holds what an earlier promotion put there: the newest one never moved it.
        note = (f"promotion {record.sequence} of {record.version or '-'} ({record.digest.short}) "
                f"not completed: {target.label} holds {image_version(current, target.repository) or current.digest.short}")
        record = earlier[0]
    elif record is None or record.digest != current.digest:
        note = "tag moved outside imagebuild; no record of this digest"
    return EnvironmentStatus(
        environment=env.name, target=target.label,
        digest=current.digest if current else None,
        version=(image_version(current, target.repository) if current else None)
        or (record.version if record else None),
        promoted_at=record.time if record and current and record.digest == current.digest else None,
        sequence=record.sequence if record else None, note=note,
        checks=record.checks if record and current and record.digest == current.digest else ())


def history(home: ImagePlace, environments: Sequence[Environment], environment: str,
            target_for: Callable[[Environment], Target] | None = None, warn: Warn | None = None) -> list[Record]:
    """The environment's honest records, newest first, rollbacks marked; with `target_for`, without a newest record whose
    digest the environment's tag does not hold (a promotion that never completed)."""
    index = environment_index(environments, environment)
    target = target_for(environments[index]) if target_for is not None else None
    records, current = in_parallel([lambda: read_records(home, environment, warn=warn),
                                    lambda: _digest_at(target) if target is not None else None],
                                   [home] + ([target.repository] if target is not None else []))
    if records and target is not None:
        # Not completed: the tag is missing, or still holds what an earlier promotion put there.
        if current != records[0].digest and (current is None or any(r.digest == current for r in records[1:])):
            records = records[1:]
    return mark_rollbacks(records)


def mark_rollbacks(records: Sequence[Record]) -> list[Record]:
    """Each record marked when it was a rollback, by the rule `promote` applies: a move away from the
    latest digest to one the environment had before."""
    marked = []
    for index, record in enumerate(records):
        older = records[index + 1:]
        went_back = bool(older) and older[0].digest != record.digest and any(o.digest == record.digest for o in older)
        marked.append(replace(record, rollback=went_back))
    return marked


# -- wiring: the recipe's places -------------------------------------------------------------

class Places:
    """The home repository (`registry/name`, or the local store) and each environment's target."""

    def __init__(self, name: str, registry: str | None, store: LayoutStore, *, insecure: bool | None = None,
                 client_options: dict | None = None):
        self.name = name
        self.insecure = insecure
        self.client_options = client_options or {}
        self._clients: dict[str, RegistryClient] = {}
        self.home: ImagePlace
        if registry:
            ref = _place(registry, name)
            self.home = RegistryPlace(self.client(ref.registry), ref.repository)
        else:
            self.home = LayoutPlace(store, name)

    def client(self, host: str) -> RegistryClient:
        if host not in self._clients:
            # Imported here: promotion within the local store never loads the HTTP stack.
            from imagebuild.registry.client import RegistryClient

            self._clients[host] = RegistryClient(host, insecure=self.insecure, **self.client_options)
        return self._clients[host]

    def target_for(self, env: Environment) -> Target:
        if not env.registry:
            return Target(self.home, env.name)
        if not isinstance(self.home, RegistryPlace):
            raise UserError(f"environment {env.name} names registry {env.registry}, but the recipe has no "
                            "`registry:` to promote from", hint="set `registry:` in the recipe")
        ref = _place(env.registry, self.name)
        return Target(RegistryPlace(self.client(ref.registry), ref.repository), env.name)

    def requests(self) -> int:
        return sum(c.counters.requests for c in self._clients.values())

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def _place(registry: str, name: str) -> Reference:
    ref = Reference.parse(f"{registry.rstrip('/')}/{name}")
    if not ref.registry or ref.tag or ref.digest:
        raise UserError(f"registry {registry!r} is not HOST[:PORT][/PATH]",
                        hint="write it like localhost:5000/acme")
    return ref
