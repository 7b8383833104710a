"""The registry as a shared layer cache: cache key → layer descriptor, one small artifact per key.

A bake that pushes publishes, for each of its layers, an OCI image manifest with
`artifactType: application/vnd.imagebuild.layer-cache.v1+json`, the empty config
and the empty blob as its one layer, tagged `cache-<key>` in the cache repository
(by default REGISTRY/NAME-cache). The layer's descriptor (digest, size, media type,
diff_id, uncompressed size) and the repository that holds its blob ride in the
manifest's annotations, so an entry costs one small manifest and no blob of its own.

A bake whose local layer cache misses asks the registry before building: a hit is
used as it is (the image references the blob where it already lies; a push mounts it),
so nothing is built or downloaded. The cache never decides an image's content: keys
are the local LayerCache's, so a hit gives the bytes a build would. Anything wrong
with the cache (unreachable, refused, an entry whose blob is gone or whose size
differs) is a miss or a warning, never a failed bake or a broken image.
"""

from __future__ import annotations

import contextlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from imagebuild.errors import ImageBuildError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import LayerResult
from imagebuild.oci.model import Descriptor
from imagebuild.oci.reference import Reference
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.copy import copy_blobs
from imagebuild.stores.layout import PUBLISHED_CACHE_ENTRIES_FILE, LayoutStore
from imagebuild.stores.place import LayoutPlace, RegistryPlace
from imagebuild.stores.registry import open_client

ARTIFACT_TYPE = "application/vnd.imagebuild.layer-cache.v1+json"
EMPTY = b"{}"
_PREFIX = "dev.imagebuild.cache."
LOOKUP_PARALLEL = 4


def cache_tag(key: str) -> str:
    return f"cache-{key}"


def default_cache_repository(registry: str, name: str) -> str:
    """REGISTRY/NAME-cache: beside the image's repository, so its tags stay the image's versions."""
    return f"{registry}/{name}-cache"


@dataclass(frozen=True)
class RemoteLayer:
    """A layer the registry's cache holds: where its blob lies, and its descriptor."""

    repository: str
    result: LayerResult


def entry_manifest(key: str, repository: str, result: LayerResult) -> bytes:
    empty = {"mediaType": mt.OCI_EMPTY, "digest": str(Digest.of(EMPTY)), "size": len(EMPTY)}
    annotations = {f"{_PREFIX}key": key, f"{_PREFIX}repository": repository,
                   f"{_PREFIX}digest": str(result.digest), f"{_PREFIX}size": str(result.size),
                   f"{_PREFIX}media-type": result.media_type, f"{_PREFIX}diff-id": str(result.diff_id),
                   f"{_PREFIX}uncompressed-size": str(result.uncompressed_size)}
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": empty, "layers": [empty], "annotations": annotations}
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def parse_entry(raw: bytes, key: str) -> RemoteLayer | None:
    """The entry's layer, or None when it is not one for `key` (a garbled entry is a miss)."""
    try:
        data = json.loads(raw)
        if data.get("artifactType") != ARTIFACT_TYPE:
            return None
        notes = data["annotations"]
        if notes[f"{_PREFIX}key"] != key:
            return None
        media_type = notes[f"{_PREFIX}media-type"]
        if media_type not in mt.LAYER_TYPES:
            return None
        result = LayerResult(diff_id=Digest(notes[f"{_PREFIX}diff-id"]), digest=Digest(notes[f"{_PREFIX}digest"]),
                             size=int(notes[f"{_PREFIX}size"]),
                             uncompressed_size=int(notes[f"{_PREFIX}uncompressed-size"]), media_type=media_type)
        repository = str(notes[f"{_PREFIX}repository"])
    except Exception:    # anything unreadable: just a miss
        return None
    if result.size <= 0 or not repository:
        return None
    return RemoteLayer(repository, result)


@dataclass
class RemoteCache:
    """One registry's cache repository, read (`cache_from`) and/or written (`cache_to`)."""

    client: RegistryClient
    cache_from: Reference | None
    cache_to: Reference | None
    warnings: list[str] = field(default_factory=list)
    hits: dict[str, RemoteLayer] = field(default_factory=dict)
    # Keys cache_from was asked for and did not hold: fresher than what the store remembers writing.
    misses: set[str] = field(default_factory=set)
    _unreachable: bool = False

    def warn(self, line: str) -> None:
        if line not in self.warnings:
            self.warnings.append(line)

    def lookup(self, keys: Iterable[str]) -> dict[str, RemoteLayer]:
        """The entries the registry holds for `keys` whose blob is there at the size they say, looked up
        a few at a time. An unreachable registry is one warning and no hit."""
        wanted = [key for key in dict.fromkeys(keys) if key not in self.hits]
        if self.cache_from is None or self._unreachable or not wanted:
            return {key: self.hits[key] for key in keys if key in self.hits}
        with ThreadPoolExecutor(max_workers=LOOKUP_PARALLEL) as pool:
            answers = list(pool.map(self._one, wanted))
        for key, found in zip(wanted, answers):
            if found is not None:
                self.hits[key] = found
            elif not self._unreachable:
                self.misses.add(key)
        return {key: self.hits[key] for key in keys if key in self.hits}

    def _one(self, key: str) -> RemoteLayer | None:
        assert self.cache_from is not None
        try:
            manifest = self.client.get_manifest(self.cache_from.repository, cache_tag(key))
            found = parse_entry(manifest.raw, key) if manifest is not None else None
            if found is None:
                return None
            size = self.client.blob_size(found.repository, str(found.result.digest))
        except ImageBuildError as exc:
            self._unreachable = True
            self.warn(f"the layer cache {self.cache_from} could not be read ({exc.message}); building locally")
            return None
        # A blob that is gone, or not the size the entry says, is a miss: the layer is built again.
        return found if size == found.result.size else None

    def publish(self, layers: Sequence[tuple[str, LayerResult]], repository: str,
                store: LayoutStore | None = None) -> int:
        """Write one entry per (key, layer) whose blob now lies in `repository`, unless the registry is
        known to hold that exact entry already: the lookup found it, or `store` remembers writing or
        finding it. A refusal is a warning. Returns how many entries were written."""
        if self.cache_to is None:
            return 0
        target = self.cache_to.repository
        where = f"{self.client.host}/{target}"
        remembered = published_entries(store).get(where, {}) if store is not None else {}
        entries, present = [], []
        for key, result in layers:
            raw = entry_manifest(key, repository, result)
            known = self.hits.get(key)
            if known is not None and known.result == result and self.cache_from == self.cache_to:
                present.append((key, entry_manifest(key, known.repository, known.result)))
                continue     # the entry is there already
            lost = key in self.misses and self.cache_from == self.cache_to
            if remembered.get(key) == str(Digest.of(raw)) and not lost:
                continue     # written by this store before, the same bytes
            entries.append((key, raw))
        if not entries:
            _remember_entries(store, where, present)
            return 0
        try:
            empty = Digest.of(EMPTY)
            # An entry found there names the empty blob, so the repository holds it.
            if not present and not self.client.blob_exists(target, str(empty)):
                self.client.upload_blob(target, _empty_descriptor(), _empty_opener)
        except ImageBuildError as exc:
            self.warn(f"the layer cache {self.cache_to} was not written ({exc.message}); the image is pushed")
            return 0

        def put(entry: tuple[str, bytes]) -> ImageBuildError | None:
            try:
                self.client.put_manifest(target, cache_tag(entry[0]), entry[1], mt.OCI_MANIFEST)
            except ImageBuildError as exc:
                return exc
            return None

        # A few at a time, as they are looked up: each is a round trip that waits on the registry.
        with ThreadPoolExecutor(max_workers=max(1, min(LOOKUP_PARALLEL, len(entries)))) as pool:
            outcomes = list(pool.map(put, entries))
        failures = [exc for exc in outcomes if exc is not None]
        if failures:
            self.warn(f"the layer cache {self.cache_to} was not written ({failures[0].message}); the image is pushed")
        _remember_entries(store, where, present + [entry for entry, exc in zip(entries, outcomes) if exc is None])
        return len(entries) - len(failures)


# The entries a store wrote to (or found in) a registry's cache repository, `registry-cache-entries.json`
# beside it: host/repository -> {key -> entry manifest digest}. A warm runner's own layers are not looked
# up (its local cache has them), so this is how it knows not to write their entries again. Losing the
# file only costs those writes; an entry the registry has since lost is written again by the next runner
# that builds or looks up that layer without this record, or by this one when its lookup finds it gone. `imagebuild gc` forgets the entries of keys the local
# layer cache no longer holds (stores/gc.py).
PUBLISHED_FILE = PUBLISHED_CACHE_ENTRIES_FILE


def published_entries(store: LayoutStore | None) -> dict[str, dict[str, str]]:
    if store is None:
        return {}
    try:
        data = json.loads((store.root / PUBLISHED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {where: known for where, known in data.items() if isinstance(known, dict)}


def _remember_entries(store: LayoutStore | None, where: str, entries: Sequence[tuple[str, bytes]]) -> None:
    if store is None or not entries:
        return
    path = store.root / PUBLISHED_FILE
    try:
        with store.locked():
            data = published_entries(store)
            known = data.setdefault(where, {})
            for key, raw in entries:
                known[key] = str(Digest.of(raw))
            store._atomic_write(path, json.dumps(data, sort_keys=True).encode())
    except (OSError, ImageBuildError):
        pass     # only spares later writes: a read-only store still pushes


def _empty_descriptor() -> Descriptor:
    return Descriptor(mt.OCI_EMPTY, Digest.of(EMPTY), len(EMPTY))


def _empty_opener():
    return contextlib.nullcontext(io.BytesIO(EMPTY))


def fetch_layers(cache: RemoteCache, store: LayoutStore, layers: Iterable[RemoteLayer]) -> int:
    """Pull into `store` the blobs of `layers` it lacks, through the one copy (each verified against its
    digest and size). Returns the bytes downloaded."""
    by_repository: dict[str, list[Descriptor]] = {}
    for layer in layers:
        if not store.has_blob(layer.result.digest):
            descriptor = Descriptor(layer.result.media_type, layer.result.digest, layer.result.size)
            by_repository.setdefault(layer.repository, []).append(descriptor)
    down = 0
    for repository, blobs in by_repository.items():
        down += copy_blobs(RegistryPlace(cache.client, repository), LayoutPlace(store), blobs).blob_bytes
    return down


def open_remote_cache(registry: str | None, name: str, *, push: bool, cache_from: str | None,
                      cache_to: str | None, insecure: bool | None = None) -> RemoteCache | None:
    """The registry's layer cache a bake uses: with `push`, REGISTRY/NAME-cache read and written;
    `cache_from`/`cache_to` (HOST/REPO) name another repository to read or write. None without either."""
    default = default_cache_repository(registry, name) if (push and registry) else None
    read = _repository(cache_from or default, "--cache-from")
    write = _repository(cache_to or default, "--cache-to") if (push or cache_to) else None
    if read is None and write is None:
        return None
    hosts = {ref.registry for ref in (read, write) if ref is not None}
    if len(hosts) > 1:
        raise UserError(f"--cache-from and --cache-to name two registries ({' and '.join(sorted(hosts))})",
                        hint="keep the layer cache in one registry")
    return RemoteCache(open_client(hosts.pop(), insecure=insecure), read, write)


def _repository(text: str | None, option: str) -> Reference | None:
    if text is None:
        return None
    ref = Reference.parse(text)
    if not ref.registry or ref.tag is not None or ref.digest:
        raise UserError(f"{option} {text!r} is not a repository", hint="use HOST[:PORT]/REPO, e.g. localhost:5000/acme/cache")
    return ref
