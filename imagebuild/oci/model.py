"""Descriptors, image configs, manifests and indexes, as immutable values.

Nothing here does I/O. Transforms return new values. Manifest and config
bytes are produced once, canonically, and afterwards handled only as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Mapping

from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest

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
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))



@dataclass(frozen=True)
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
        return cls(os=data.get("os", "linux"), architecture=data.get("architecture", "amd64"),
                   variant=data.get("variant"))


@dataclass(frozen=True)
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
        platform = data.get("platform")
        return cls(media_type=data["mediaType"], digest=Digest(data["digest"]), size=int(data["size"]),
                   annotations=data.get("annotations") or {},
                   platform=Platform.from_dict(platform) if platform else None)

    def with_annotations(self, **extra: str) -> "Descriptor":
        merged = dict(self.annotations)
        merged.update(extra)
        return replace(self, annotations=merged)


# The OCI "empty" blob and its descriptor: the config (and sole layer) of artifacts that carry no data.
EMPTY_JSON = b"{}"
EMPTY_DESCRIPTOR = Descriptor(mt.OCI_EMPTY, Digest.of(EMPTY_JSON), len(EMPTY_JSON))


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
        import json

        data = json.loads(raw)
        media = data.get("mediaType") or media_type or mt.OCI_MANIFEST
        if media not in mt.MANIFEST_TYPES:
            raise ValueError(f"not an image manifest: {media}")
        return cls(raw=raw, media_type=media, config=Descriptor.from_dict(data["config"]),
                   layers=tuple(Descriptor.from_dict(d) for d in data.get("layers", [])),
                   annotations=_frozen(data.get("annotations")))

    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config,) + self.layers


def parse_config(raw: bytes) -> dict[str, Any]:
    import json

    return json.loads(raw)


def index_dict(manifests: list[Descriptor], annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                           "manifests": [d.to_dict() for d in manifests]}
    if annotations:
        out["annotations"] = dict(annotations)
    return out
