"""One builder per recipe section (os, runtime, libraries, server, app, config).

Each builder turns its inputs into entries for the reproducible layer writer
and stores the result as a blob in the local store. `LayerCache` remembers,
inside that store, which layer a cache key produced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from imagebuild.atomic import write_atomically
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import Entry, LayerResult, write_layer
from imagebuild.stores.layout import LAYER_CACHE_DIR as CACHE_DIR, LayoutStore, os_error_for


def store_layer(store: LayoutStore, entries: Iterable[Entry], source_date_epoch: int,
                compression: str = "gzip") -> LayerResult:
    """Write one layer straight into the store as a blob; return its identity."""
    with store.blob_writer() as writer:
        result = write_layer(entries, writer.file, compression, source_date_epoch)
        writer.commit(result.digest)
    return result


class LayerCache:
    """Cache key → the layer it built, one small JSON file per key in the store.

    An entry counts only while its blob is still in the store, so removing
    blobs can never make a bake reference a layer that is gone.
    """

    def __init__(self, store: LayoutStore):
        self.store = store
        self.root = Path(store.root) / CACHE_DIR

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> LayerResult | None:
        try:
            data = json.loads(self._path(key).read_bytes())
            result = LayerResult(diff_id=Digest(data["diff_id"]), digest=Digest(data["digest"]),
                                 size=int(data["size"]), uncompressed_size=int(data["uncompressed_size"]),
                                 media_type=data["media_type"])
        except Exception:  # unreadable or garbled (a bad digest raises UserError): just a miss
            return None
        if not self.store.has_blob(result.digest) or self.store.blob_size(result.digest) != result.size:
            return None
        return result

    def put(self, key: str, result: LayerResult) -> None:
        data = json.dumps({"diff_id": str(result.diff_id), "digest": str(result.digest),
                           "size": result.size, "uncompressed_size": result.uncompressed_size,
                           "media_type": result.media_type}, sort_keys=True).encode()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(self._path(key), data, prefix=".tmp-")
        except OSError as exc:
            raise os_error_for(self.store.root, exc) from None
