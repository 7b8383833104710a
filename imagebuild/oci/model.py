"""Descriptors, image configs, manifests and indexes, as immutable values.

Nothing here does I/O. Transforms return new values. Manifest and config
bytes are produced once, canonically, and afterwards handled only as bytes.
"""

from __future__ import annotations

import json
from dataclasses import field, replace
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from imagebuild.errors import UserError
from imagebuild.frozen import frozen
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest, is_digest

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"


def rfc3339(epoch: int) -> str:
    """A Unix time in the form an image's `created` field and annotation take."""
    from datetime import datetime, timezone     # only a bake dates what it makes

    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


# Manifests, indexes and configs come from registries and stores that may send anything: they are
# parsed only within these bounds and checked field by field, so a bad answer is one clear error.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024     # the limit distribution itself puts on a manifest PUT
MAX_CONFIG_BYTES = 8 * 1024 * 1024       # an image config with a long history is some kB
MAX_BLOB_SIZE = 2 ** 63 - 1              # sizes are int64 in the OCI specification


class MalformedError(ValueError):
    """Bytes that should be a manifest, an index or a config and are not; the message says what is wrong."""


def load_json_object(raw: bytes, what: str, limit: int = MAX_MANIFEST_BYTES) -> dict[str, Any]:
    """A JSON object from untrusted bytes, refusing oversized, deeply nested or non-object bodies."""
    if len(raw) > limit:
        raise MalformedError(f"the {what} is {len(raw)} bytes, over the {limit // (1024 * 1024)} MiB limit")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise MalformedError(f"the {what} is JSON nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError and an over-long integer
        raise MalformedError(f"the {what} is not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise MalformedError(f"the {what} is a JSON {type(data).__name__}, not an object")
    return data


def _string(data: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedError(f"{what} has no {key}" if value is None else f"{what} has a {key} that is not a string")
    return value


def _string_map(value: Any, what: str) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in value.items()):
        raise MalformedError(f"{what} has annotations that are not an object of strings")
    return value


def _list(data: Mapping[str, Any], key: str, what: str) -> list:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedError(f"{what} has {key} that are not a list")
    return value



@frozen
class ManifestBytes:
    """A manifest or index exactly as a place holds it: the bytes its digest is taken over."""
    raw: bytes
    media_type: str
    digest: Digest


@frozen
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Platform":
        if not isinstance(data, Mapping):
            raise MalformedError("a platform is not an object")
        os_name = _string(data, "os", "a platform", required=False) or "linux"
        architecture = _string(data, "architecture", "a platform", required=False) or "amd64"
        return cls(os=os_name, architecture=architecture, variant=_string(data, "variant", "a platform",
                                                                          required=False))


# Python's name for a machine (platform.machine()) → the OCI architecture.
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_platform() -> Platform:
    """The platform of the machine this runs on: the image a multi-platform index gives to
    `--load` and `docker-archive:`."""
    import platform as _platform

    machine = _platform.machine().lower()
    return Platform("linux", _MACHINES.get(machine, machine))


def parse_platform(text: str) -> Platform:
    """OS/ARCH[/VARIANT], e.g. linux/arm64; a UserError names the form otherwise."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(part and part.isalnum() for part in parts):
        raise UserError(f"{text!r} is not a platform", hint="write OS/ARCH, e.g. linux/arm64")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def platform_child(index: Sequence[Descriptor], platform: Platform) -> Descriptor | None:
    """The descriptor of `platform`'s image among an index's children (the first that fits)."""
    for child in index:
        found = child.platform
        if found is not None and found.os == platform.os and found.architecture == platform.architecture \
                and (platform.variant is None or found.variant == platform.variant):
            return child
    return None


@frozen
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    def __post_init__(self):
        object.__setattr__(self, "digest", Digest(self.digest))
        object.__setattr__(self, "annotations", _frozen(self.annotations))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = self.platform.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Descriptor":
        """A descriptor checked field by field: MalformedError names the first wrong one."""
        if not isinstance(data, Mapping):
            raise MalformedError(f"a descriptor is a JSON {type(data).__name__}, not an object")
        media_type = _string(data, "mediaType", "a descriptor")
        digest = _string(data, "digest", "a descriptor")
        if not is_digest(digest):
            raise MalformedError(f"a descriptor has the digest {digest[:80]!r}, not sha256: and 64 hex digits")
        size = data.get("size")
        # bool is an int in Python, and `true` is no size.
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
            raise MalformedError(f"descriptor {digest} has the size {str(size)[:40]!r}, "
                                 "not a non-negative integer")
        platform = data.get("platform")
        return cls(media_type=media_type, digest=Digest(digest), size=size,
                   annotations=_string_map(data.get("annotations"), f"descriptor {digest}"),
                   platform=Platform.from_dict(platform) if platform is not None else None)

    def with_annotations(self, **extra: str) -> "Descriptor":
        merged = dict(self.annotations)
        merged.update(extra)
        return replace(self, annotations=merged)


# The OCI "empty" blob and its descriptor: the config (and sole layer) of artifacts that carry no data.
EMPTY_JSON = b"{}"
EMPTY_DESCRIPTOR = Descriptor(mt.OCI_EMPTY, Digest.of(EMPTY_JSON), len(EMPTY_JSON))


@frozen
class Layer:
    """A layer blob as an image sees it: its descriptor plus its diff_id."""

    descriptor: Descriptor
    diff_id: Digest

    def __post_init__(self):
        object.__setattr__(self, "diff_id", Digest(self.diff_id))

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size


@frozen
class HistoryEntry:
    created: str
    created_by: str
    comment: str | None = None
    empty_layer: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": self.created, "created_by": self.created_by}
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@frozen
class Image:
    """An image under construction or read back: config settings plus layers.

    `runtime` holds the OCI `config` object (User, Env, Entrypoint, Cmd,
    WorkingDir, ExposedPorts, Labels, and Docker's Healthcheck), as plain JSON.
    """

    created: str
    platform: Platform = Platform()
    layers: tuple[Layer, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    runtime: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    layer_media_type_hint: str = mt.OCI_LAYER_GZIP

    def __post_init__(self):
        object.__setattr__(self, "annotations", _frozen(self.annotations))
        object.__setattr__(self, "runtime", MappingProxyType(dict(self.runtime)))

    def with_layer(self, layer: Layer, created_by: str, comment: str | None = None) -> "Image":
        entry = HistoryEntry(created=self.created, created_by=created_by, comment=comment)
        return replace(self, layers=self.layers + (layer,), history=self.history + (entry,))

    def with_runtime(self, **settings: Any) -> "Image":
        merged = dict(self.runtime)
        for key, value in settings.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return replace(self, runtime=merged)

    def with_annotations(self, **extra: str) -> "Image":
        merged = dict(self.annotations)
        merged.update(extra)
        return replace(self, annotations=merged)

    def config_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": _plain(self.runtime),
            "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in self.layers]},
            "history": [entry.to_dict() for entry in self.history],
        }

    def config_bytes(self) -> bytes:
        return canonical_json(self.config_dict())

    def config_descriptor(self) -> Descriptor:
        data = self.config_bytes()
        return Descriptor(mt.OCI_CONFIG, Digest.of(data), len(data))

    def manifest_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": self.config_descriptor().to_dict(),
            "layers": [layer.descriptor.to_dict() for layer in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def manifest_bytes(self) -> bytes:
        return canonical_json(self.manifest_dict())

    def manifest_descriptor(self) -> Descriptor:
        data = self.manifest_bytes()
        return Descriptor(mt.OCI_MANIFEST, Digest.of(data), len(data), platform=self.platform)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@frozen
class ParsedManifest:
    """A manifest read back from bytes; the bytes stay the source of truth."""

    raw: bytes
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str]

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None) -> "ParsedManifest":
        """The manifest in `raw`, checked: MalformedError (a ValueError) says what is wrong."""
        data = load_json_object(raw, "manifest")
        media = _string(data, "mediaType", "the manifest", required=False) or media_type or mt.OCI_MANIFEST
        if media not in mt.MANIFEST_TYPES:
            raise MalformedError(f"not an image manifest: {media[:80]}")
        if "config" not in data:
            raise MalformedError("the manifest has no config")
        return cls(raw=raw, media_type=media, config=Descriptor.from_dict(data["config"]),
                   layers=tuple(Descriptor.from_dict(d) for d in _list(data, "layers", "the manifest")),
                   annotations=_frozen(_string_map(data.get("annotations"), "the manifest")))

    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config,) + self.layers


def parse_index(raw: bytes) -> tuple[Descriptor, ...]:
    """The manifests an index lists, checked as ParsedManifest.parse checks a manifest."""
    data = load_json_object(raw, "index")
    _string_map(data.get("annotations"), "the index")
    return tuple(Descriptor.from_dict(d) for d in _list(data, "manifests", "the index"))


def parse_config(raw: bytes) -> dict[str, Any]:
    """An image config, checked where images are built on it: an object, runtime settings an object,
    `rootfs.diff_ids` a list of digests."""
    data = load_json_object(raw, "image config", MAX_CONFIG_BYTES)
    if not isinstance(data.get("config") or {}, dict):
        raise MalformedError("the image config has a config that is not an object")
    rootfs = data.get("rootfs")
    if not isinstance(rootfs, dict):
        raise MalformedError("the image config has no rootfs object")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d) for d in diff_ids):
        raise MalformedError("the image config's rootfs.diff_ids is not a list of sha256 digests")
    _list(data, "history", "the image config")
    return data


def image_index(children: Sequence[Descriptor], annotations: Mapping[str, str] | None = None) -> bytes:
    """An OCI image index over one image per platform, as canonical bytes: the same children
    (each descriptor with its platform) and annotations give the same digest."""
    if any(child.platform is None for child in children):
        raise ValueError("every image of a multi-platform index names its platform")
    return canonical_json(index_dict(list(children), annotations))


def index_dict(manifests: list[Descriptor], annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                           "manifests": [d.to_dict() for d in manifests]}
    if annotations:
        out["annotations"] = dict(annotations)
    return out
