"""Removing images from the local store and reclaiming the space they held.

`remove_refs` drops tags from index.json. `collect_garbage` is a
mark-and-sweep: it marks every blob reachable from index.json (manifests,
their configs, layers and `subject`s, indexes and their children) and, by
default, every blob a layer-cache entry names, then deletes every other blob
under blobs/sha256, and temp files older than an hour: those in tmp/ and the
`.tmp-*` files atomic writes left beside index.json and the cache entries. It
also prunes what the store remembers of things now gone: the dpkg facts of
removed layers, the recipe cache's entries of recipe files that no longer
exist, the verified-base-layers record's entries of blobs swept, and the
record of registry layer-cache entries written (registry-cache-entries.json)
for keys the local layer cache no longer holds.

A bake writes its layers before it tags its image. The sweep therefore runs
holding the writers' lease exclusively (see stores/lease.py) and then the
store's lock, so no writing process runs while blobs are judged, and none can
start before the sweep is over. Both are taken in that order by everyone,
which rules out a deadlock.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from imagebuild.errors import StoreError, UserError, quoted
from imagebuild.stores.known_blobs import where_is
from imagebuild.stores.layout import LAYER_CACHE_DIR as CACHE_DIR
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest, is_digest
from imagebuild.oci.model import ANNOTATION_REF_NAME, Descriptor
from imagebuild.stores.lease import StoreBusy, exclusive_lease
from imagebuild.stores.layout import (DISK_SUFFIX, DPKG_FACTS_DIR, PUBLISHED_CACHE_ENTRIES_FILE, RECIPE_CACHE_DIR,
                                      VERIFIED_LAYERS_FILE, LayoutStore, is_referrers_ref, os_error_for)

# gc runs with no writer at work (it holds the writers' lease), so an hour-old temp file is surely dead.
STALE_TMP_SECONDS = 3600
_HEX = re.compile(r"^[0-9a-f]{64}$")


class StoreBusyError(StoreError):
    """A bake, pull or other writer is using the store and gc was told not to wait."""


def _require_store(store: LayoutStore) -> None:
    if not store.exists():
        raise UserError(f"{store.root} is not an imagebuild store (it has no index.json)",
                        hint="point --store or IMAGEBUILD_STORE at the store's directory")


# -- rm ---------------------------------------------------------------------------------

def remove_refs(store: LayoutStore, refs: list[str]) -> list[dict[str, str]]:
    """Untag each ref (NAME:TAG, or a digest: every tag on it), and with an image the disk baked from it
    (NAME:TAG-disk, its subject that image). All refs are checked before any is removed."""
    _require_store(store)

    names: list[str] = []   # in the order asked, for the report

    def choose(tagged: dict[str, Descriptor]) -> list[str]:
        for ref in refs:
            if is_digest(ref):
                matching = sorted(name for name, d in tagged.items() if d.digest == ref)
            else:
                matching = [ref] if ref in tagged else []
            if not matching:
                raise UserError(f"no image {quoted(ref)} in the local store at {store.root}",
                                hint="give NAME:TAG or sha256:DIGEST as `imagebuild images --all` lists them")
            names.extend(n for n in matching if n not in names)
        names.extend(disk for disk in [_disk_of(store, tagged, name) for name in names]
                     if disk is not None and disk not in names)
        return names

    removed = store.untag(choose=choose)
    return [{"ref": name, "digest": str(removed[name].digest)} for name in names if name in removed]


def _disk_of(store: LayoutStore, tagged: dict[str, Descriptor], name: str) -> str | None:
    """NAME-disk when it is the disk baked from the manifest NAME tags."""
    disk = tagged.get(name + DISK_SUFFIX)
    if disk is None:
        return None
    data = json.loads(store.read_blob(str(disk.digest)))
    ours = data.get("artifactType") == mt.IMAGEBUILD_DISK \
        and (data.get("subject") or {}).get("digest") == str(tagged[name].digest)
    return name + DISK_SUFFIX if ours else None


# -- gc ---------------------------------------------------------------------------------

@dataclass
class GcResult:
    dry_run: bool
    kept_blobs: int = 0
    removed_blobs: list[Digest] = field(default_factory=list)
    freed_bytes: int = 0
    removed_temp_files: int = 0
    dropped_cache_entries: int = 0
    dropped_recipe_entries: int = 0
    forgotten_verified_layers: int = 0
    forgotten_registry_entries: int = 0
    missing_blobs: list[Digest] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "kept_blobs": self.kept_blobs,
                "removed_blobs": len(self.removed_blobs), "removed_digests": self.removed_blobs,
                "freed_bytes": self.freed_bytes, "removed_temp_files": self.removed_temp_files,
                "dropped_cache_entries": self.dropped_cache_entries,
                "dropped_recipe_entries": self.dropped_recipe_entries,
                "forgotten_verified_layers": self.forgotten_verified_layers,
                "forgotten_registry_entries": self.forgotten_registry_entries, "missing_blobs": self.missing_blobs}


def collect_garbage(store: LayoutStore, *, dry_run: bool = False, drop_cache: bool = False, wait: bool = True,
                    on_wait: Callable[[], None] | None = None) -> GcResult:
    """Mark and sweep the store. `drop_cache`: also forget cache entries whose layer no image uses."""
    _require_store(store)
    try:
        with exclusive_lease(store.root, wait=wait, on_wait=on_wait), store.locked():
            return _mark_and_sweep(store, dry_run, drop_cache)
    except StoreBusy:
        raise StoreBusyError(f"another imagebuild process is using the store at {store.root}",
                             hint="retry when it has finished, or run gc without --no-wait to wait for it") from None
    except OSError as exc:
        raise os_error_for(store.root, exc) from None


def _mark_and_sweep(store: LayoutStore, dry_run: bool, drop_cache: bool) -> GcResult:
    result = GcResult(dry_run=dry_run)
    live, orphans = _reachable(store, result)
    if orphans and not dry_run:
        store.untag(*orphans, held=True)    # an image's attachments go with its last tag
    cache_entries = _cache_entries(store)
    for path, digest in cache_entries:
        if not drop_cache:
            if digest is not None:
                live.add(digest)    # kept so a rebake reuses the layer; a garbled entry is just a miss
            continue
        if digest is None or digest not in live:
            result.dropped_cache_entries += 1
            if not dry_run:
                _unlink(path)
    blob_dir = store.root / "blobs" / "sha256"
    for entry in sorted(os.scandir(blob_dir), key=lambda e: e.name):
        if not _HEX.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue    # not ours to judge
        if f"sha256:{entry.name}" in live:
            result.kept_blobs += 1
            continue
        result.removed_blobs.append(Digest(f"sha256:{entry.name}"))
        result.freed_bytes += entry.stat(follow_symlinks=False).st_size
        if not dry_run:
            _unlink(Path(entry.path))
    facts_dir = store.root / DPKG_FACTS_DIR
    for path in sorted(facts_dir.glob("*.json")) if facts_dir.is_dir() and not dry_run else ():
        if f"sha256:{path.stem}" not in live:
            _unlink(path)     # what a removed layer held (evidence/contents.py), no longer asked for
    result.removed_temp_files = store.sweep_stale_temps(STALE_TMP_SECONDS, dry_run=dry_run)
    result.dropped_recipe_entries = _drop_recipe_entries(store, dry_run)
    result.forgotten_verified_layers = _forget_verified_layers(store, {str(d) for d in result.removed_blobs}, dry_run)
    kept_keys = {path.stem for path, digest in cache_entries
                 if digest is not None and (not drop_cache or digest in live)}
    result.forgotten_registry_entries = _forget_registry_entries(store, kept_keys, dry_run)
    return result


def _drop_recipe_entries(store: LayoutStore, dry_run: bool) -> int:
    """Remove the recipe cache's entries whose recipe file is gone: nothing else ever would."""
    from imagebuild.recipe.cache import entries_of_gone_recipes

    gone = entries_of_gone_recipes(store.root / RECIPE_CACHE_DIR)
    dropped = 0
    for path in gone:
        try:
            if not dry_run:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue     # someone else's entry in a shared store, not this user's to remove
        dropped += 1
    return dropped


def _read_record(path: Path, dry_run: bool) -> dict | None:
    """A JSON object record in the store, or None when absent or unreadable; an unreadable one is
    removed (not with `dry_run`), as its readers take it for empty anyway."""
    try:
        record = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        if not dry_run:
            _unlink(path)
        return None
    return record


def _forget_verified_layers(store: LayoutStore, swept: set[str], dry_run: bool) -> int:
    """Drop the entries of the verified-base-layers record whose blob is gone from the store or
    `swept` by this gc (a bake would check it again anyway, as its blob file's identity no longer
    holds)."""
    path = store.root / VERIFIED_LAYERS_FILE
    known = _read_record(path, dry_run)
    if known is None:
        return 0
    kept = {digest: key for digest, key in known.items()
            if is_digest(digest) and digest not in swept and store.blob_path(digest).is_file()}
    forgotten = len(known) - len(kept)
    if forgotten and not dry_run:
        store._atomic_write(path, canonical_json(kept))
    return forgotten


def _forget_registry_entries(store: LayoutStore, kept_keys: set[str], dry_run: bool) -> int:
    """Drop the entries of the record of registry layer-cache entries written (build/remote_cache.py)
    whose key the local layer cache no longer holds (after this gc): the record only spares rewriting
    the entries of layers this store has, so the rest would only make it grow. A wrong guess costs one
    entry written again."""
    path = store.root / PUBLISHED_CACHE_ENTRIES_FILE
    record = _read_record(path, dry_run)
    if record is None:
        return 0
    kept: dict[str, dict[str, str]] = {}
    forgotten = 0
    for where, known in record.items():
        if not isinstance(known, dict):
            continue      # a publish ignores it too
        still = {key: digest for key, digest in known.items() if key in kept_keys}
        forgotten += len(known) - len(still)
        if still:
            kept[where] = still
    if kept != record and not dry_run:
        store._atomic_write(path, json.dumps(kept, sort_keys=True).encode())
    return forgotten


def _reachable(store: LayoutStore, result: GcResult) -> tuple[set[str], list[str]]:
    """Every digest reachable from index.json, and the referrers tags whose image is gone.

    A referrers tag (NAME:sha256-<hex>, the index of an image's attachments) keeps its attachments
    only while their image is kept by another tag: an attachment names its image as its subject,
    so otherwise the attachments of a removed image would keep it forever. A reachable manifest that
    cannot be read stops gc: without it, what it references is unknown and could be swept."""
    live: set[str] = set()
    referrers: dict[str, Descriptor] = {}
    roots = []
    for name, descriptor in store.refs().items():
        if is_referrers_ref(name) and descriptor.media_type in mt.INDEX_TYPES:
            referrers[name] = descriptor
        else:
            roots.append(descriptor)
    tagged = {str(d.digest) for d in store.refs().values()}
    roots += [d for d in store.manifests() if str(d.digest) not in tagged]   # untagged entries of the index
    _mark(store, [(str(d.digest), d.media_type) for d in roots], live, result)
    while True:
        kept = [name for name, d in referrers.items() if "sha256:" + name.rpartition(":sha256-")[2] in live]
        if not kept:
            break
        _mark(store, [(str(referrers[name].digest), referrers[name].media_type) for name in kept], live, result)
        for name in kept:
            del referrers[name]
    result.missing_blobs.sort()
    return live, sorted(referrers)


def _mark(store: LayoutStore, pending: list[tuple[str, str]], live: set[str], result: GcResult) -> None:
    while pending:
        digest, media_type = pending.pop()
        if digest in live:
            continue
        live.add(digest)
        if not store.blob_path(digest).is_file():
            if where_is(store, digest) is None:    # else a layer a registry lent: fetched when needed
                result.missing_blobs.append(Digest(digest))
            continue
        if media_type not in mt.ALL_MANIFEST_TYPES:
            continue
        try:
            data = json.loads(store.read_blob(digest))
            children = _children(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"manifest {digest} in the store at {store.root} cannot be read ({exc}); nothing was removed",
                             hint="remove its tag with `imagebuild rm` or pull the image again") from None
        pending.extend(children)


def _children(data: dict) -> list[tuple[str, str]]:
    """Descriptors a manifest or index points at: config, layers, child manifests and its subject."""
    found = []
    for d in ([data.get("config")] if data.get("config") else []) + list(data.get("layers") or []) \
            + list(data.get("manifests") or []) + ([data["subject"]] if data.get("subject") else []):
        found.append((str(Digest(d["digest"])), d.get("mediaType", "")))
    return found


def _cache_entries(store: LayoutStore) -> list[tuple[Path, str | None]]:
    """(entry file, the layer digest it names or None when garbled) for each layer-cache entry."""
    root = store.root / CACHE_DIR
    if not root.is_dir():
        return []
    entries: list[tuple[Path, str | None]] = []
    for path in sorted(root.glob("*.json")):
        try:
            entries.append((path, str(Digest(json.loads(path.read_bytes())["digest"]))))
        except Exception:  # unreadable or garbled (a bad digest raises UserError): LayerCache treats it as a miss
            entries.append((path, None))
    return entries


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
