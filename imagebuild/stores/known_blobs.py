"""Which registry repository holds a blob, as the store remembers it (`registry-blobs.json` beside the
store): written after a push and by a bake that a registry's layer cache lent layers to; read for
cross-repository mounts, to fetch a lent layer when its bytes are needed, and by gc, for which such a
blob is not missing. Losing the file only costs uploads, or a fetch that cannot be made."""

from __future__ import annotations

import json

from imagebuild.stores.layout import LayoutStore

KNOWN_BLOBS_FILE = "registry-blobs.json"


def known_blobs(store: LayoutStore) -> dict[str, dict[str, str]]:
    """host -> {digest -> repository}; empty when the file is missing or unreadable."""
    try:
        data = json.loads((store.root / KNOWN_BLOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {host: known for host, known in data.items() if isinstance(known, dict)}


def where_is(store: LayoutStore, digest: str) -> tuple[str, str] | None:
    """(host, repository) of a registry remembered to hold `digest`, or None."""
    for host, known in sorted(known_blobs(store).items()):
        if isinstance(known.get(digest), str):
            return host, known[digest]
    return None
