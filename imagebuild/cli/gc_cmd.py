"""`imagebuild gc`: delete the blobs of the local store that nothing references."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import JsonOption, StoreOption, emit_json, open_store, say
from imagebuild.progress import human_size


def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be removed; remove nothing."),
       drop_cache: bool = typer.Option(False, "--cache",
                                       help="Also forget layer-cache entries no image uses, and free their layers "
                                            "(the next bake rebuilds them)."),
       no_wait: bool = typer.Option(False, "--no-wait",
                                    help="Fail instead of waiting when another imagebuild process uses the store."),
       store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Remove blobs no tagged image, promotion record or cache entry uses, and stale temp files."""
    from imagebuild.stores.gc import collect_garbage
    local = open_store(store)
    result = collect_garbage(local, dry_run=dry_run, drop_cache=drop_cache, wait=not no_wait,
                             on_wait=lambda: say(f"waiting for other imagebuild processes to finish with {local.root}"))
    if json_out:
        emit_json({"store": str(local.root), **result.to_dict()})
        return
    verb = "would free" if dry_run else "freed"
    typer.echo(f"{verb} {len(result.removed_blobs)} blobs, {human_size(result.freed_bytes)}; kept {result.kept_blobs} blobs")
    if result.removed_temp_files:
        say(f"{'would remove' if dry_run else 'removed'} {result.removed_temp_files} stale temp files")
    if result.dropped_cache_entries:
        say(f"{'would drop' if dry_run else 'dropped'} {result.dropped_cache_entries} layer-cache entries")
    if result.dropped_recipe_entries:
        say(f"{'would drop' if dry_run else 'dropped'} {result.dropped_recipe_entries} recipe-cache entries "
            "of recipe files that no longer exist")
    if result.forgotten_registry_entries:
        say(f"{'would forget' if dry_run else 'forgot'} {result.forgotten_registry_entries} registry layer-cache "
            "entries written for layers the local layer cache no longer holds")
    for digest in result.missing_blobs:
        say(f"warning: {digest} is referenced but missing from the store")
