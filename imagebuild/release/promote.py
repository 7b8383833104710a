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
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Sequence

from imagebuild.errors import ImageBuildError, PromotionError, UserError, quoted
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest, is_digest
from imagebuild.oci.model import (ANNOTATION_CREATED, ANNOTATION_VERSION, EMPTY_DESCRIPTOR, EMPTY_JSON,
                                  MalformedError, load_json_object)
from imagebuild.oci.reference import Reference
from imagebuild.recipe.model import Environment, environment_index
from imagebuild.registry.client import ManifestBytes, RegistryClient
from imagebuild.stores.copy import copy as copy_image
from imagebuild.stores.layout import DISK_SUFFIX, LayoutStore
from imagebuild.stores.place import ImagePlace, LayoutPlace, RegistryPlace, put_bytes, same_place

RECORD_ARTIFACT_TYPE = "application/vnd.imagebuild.promotion.v1+json"
RECORD_PREFIX = "promotion-"
ANN = "dev.imagebuild.promotion."
ANN_ENVIRONMENT = ANN + "environment"
ANN_SEQUENCE = ANN + "sequence"
ANN_DIGEST = ANN + "digest"
ANN_VERSION = ANN + "version"
ANN_TARGET = ANN + "target"
ANN_PREVIOUS = ANN + "previous"
_RECORD_TAG = re.compile(r"^promotion-(?P<env>.+)-(?P<seq>\d{6,})-(?P<short>[0-9a-f]{12})$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


# -- records ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    environment: str
    sequence: int
    digest: Digest
    version: str
    time: str
    target: str
    previous: Digest | None = None
    rollback: bool = False          # back to a digest the environment had before; set by `history`

    @property
    def tag(self) -> str:
        return record_tag(self.environment, self.sequence, self.digest)

    def to_dict(self) -> dict:
        return asdict(self)


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
        return Record(environment=a[ANN_ENVIRONMENT], sequence=int(a[ANN_SEQUENCE]), digest=Digest(a[ANN_DIGEST]),
                      version=a.get(ANN_VERSION, ""), time=a.get(ANNOTATION_CREATED, ""),
                      target=a.get(ANN_TARGET, ""), previous=Digest(previous) if previous else None)
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


def read_records(home: ImagePlace, environment: str, tags: Sequence[str] | None = None,
                 latest_only: bool = False, digest: str | None = None) -> list[Record]:
    """One environment's records (of `digest` only, when given), newest first."""
    found = record_tags(home.tags() if tags is None else tags, environment, digest)
    if latest_only:
        found = found[-1:]
    records = []
    for _, tag in reversed(found):
        manifest = home.manifest(tag)
        if manifest is not None:
            manifest_data(home, manifest)   # a garbled answer is an error, not a missing record
        record = parse_record(manifest.raw) if manifest else None
        if record is not None and (digest is None or record.digest == digest):
            records.append(record)
    return records


# -- the promotion ------------------------------------------------------------------------

@dataclass
class Target:
    repository: ImagePlace
    tag: str

    @property
    def label(self) -> str:
        return f"{self.repository.label}:{self.tag}"


@dataclass
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


def check_policy(environments: Sequence[Environment], env_index: int, manifest: ManifestBytes,
                 version: str | None, home: ImagePlace, tags: Sequence[str]) -> None:
    if not version:
        raise PromotionError(f"rule 'versioned images only': {manifest.digest} carries no "
                             f"{ANNOTATION_VERSION} annotation, so its origin is unknown",
                             hint="promote images made by `imagebuild bake`")
    if version.endswith("-dirty"):
        raise PromotionError(f"rule 'clean images only': {version} was baked from a work tree with "
                             "uncommitted changes and can never be promoted",
                             hint="commit, bake and push again")
    if env_index == 0:
        return
    previous = environments[env_index - 1].name
    if not read_records(home, previous, tags, latest_only=True, digest=manifest.digest):
        order = " -> ".join(e.name for e in environments)
        raise PromotionError(f"rule 'promotion order' ({order}): {version} ({manifest.digest.short}) was "
                             f"never promoted to {previous}",
                             hint=f"promote it to {previous} first")


def promote(home: ImagePlace, environments: Sequence[Environment], image: str, environment: str, *,
            target_for: Callable[[Environment], Target], name: str | None = None, dry_run: bool = False,
            now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> PromotionResult:
    """Promote `image` (found in `home`) to `environment`, after checking the rules."""
    index = environment_index(environments, environment)
    if not _TAG.match(environment) or len(record_tag(environment, 0, EMPTY_DESCRIPTOR.digest)) > 128:
        raise UserError(f"environment name {environment!r} cannot be a tag",
                        hint="use letters, digits, '_', '.' and '-', at most 98 characters")
    manifest = resolve_image(home, image, name)
    version = image_version(manifest, home)
    tags = home.tags()
    check_policy(environments, index, manifest, version, home, tags)
    target = target_for(environments[index])
    existing = record_tags(tags, environment)
    latest = read_records(home, environment, tags, latest_only=True)
    sequence = (existing[-1][0] + 1) if existing else 1
    result = PromotionResult(
        environment=environment, digest=manifest.digest, version=version or "", source=home.label,
        target=target.label, action="retag" if same_place(home, target.repository) else "copy",
        dry_run=dry_run, sequence=sequence, previous=latest[0].digest if latest else None,
        # A rollback returns to a digest this environment had before: read only when it is not the latest.
        rollback=bool(latest) and latest[0].digest != manifest.digest
        and bool(read_records(home, environment, tags, latest_only=True, digest=manifest.digest)))
    disk = disk_of(home, manifest, version, tags)
    disk_target = Target(target.repository, target.tag + DISK_SUFFIX)
    if latest and latest[0].digest == manifest.digest and _points_at(target, manifest) and \
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
    # Within one place, copy only writes the tag: the same manifest bytes, and no blob moves.
    moved = carry_image(target, manifest, home)
    if result.action == "copy":
        result.blobs = moved
    if disk is not None:
        carry_image(disk_target, disk, home)
    record = Record(environment=environment, sequence=sequence, digest=manifest.digest,
                    version=version or "", time=_timestamp(now()), target=target.label, previous=result.previous)
    put_bytes(home, EMPTY_JSON)
    home.put_manifest(record_manifest(record, manifest), [record.tag])
    result.record = record.tag
    return result


def carry_image(target: Target, manifest: ManifestBytes, source: ImagePlace) -> dict:
    """Copy `manifest` (from `source`) to another place under the target's tag; what moved, as push reports it."""
    counters = getattr(getattr(target.repository, "client", None), "counters", None)
    before = counters.requests if counters else 0
    copied = copy_image(source, target.repository, manifest, [target.tag])
    return {"reference": target.label, "digest": copied.digest,
            "bytes_uploaded": copied.blob_bytes + copied.manifest_bytes, "blobs_uploaded": copied.blobs_copied,
            "blobs_skipped": copied.blobs_skipped, "blobs_mounted": copied.blobs_mounted,
            "requests": counters.requests - before if counters else 0}


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


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- reading the state ------------------------------------------------------------------------

@dataclass
class EnvironmentStatus:
    environment: str
    target: str
    digest: Digest | None
    version: str | None
    promoted_at: str | None
    sequence: int | None
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def status(home: ImagePlace, environments: Sequence[Environment],
           target_for: Callable[[Environment], Target]) -> list[EnvironmentStatus]:
    tags = home.tags()
    out = []
    for env in environments:
        target = target_for(env)
        current = target.repository.manifest(target.tag)
        latest = read_records(home, env.name, tags, latest_only=True)
        record = latest[0] if latest else None
        note = None
        if current is None and record is None:
            note = "never promoted"
        elif current is None:
            note = f"tag {target.label} is missing"
        elif record is None or record.digest != current.digest:
            note = "tag moved outside imagebuild; no record of this digest"
        out.append(EnvironmentStatus(
            environment=env.name, target=target.label,
            digest=current.digest if current else None,
            version=(image_version(current, target.repository) if current else None)
            or (record.version if record else None),
            promoted_at=record.time if record and current and record.digest == current.digest else None,
            sequence=record.sequence if record else None, note=note))
    return out


def history(home: ImagePlace, environments: Sequence[Environment], environment: str) -> list[Record]:
    """One environment's promotions, newest first, each marked when it was a rollback: by the rule
    `promote` applies, a move away from the latest digest to one the environment had before."""
    environment_index(environments, environment)
    records = read_records(home, environment)
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
