"""A Debian resolve that starts from the kept index and .deb files pins exactly what a fresh one
pins, against the real mirror (mmdebstrap, root)."""

from __future__ import annotations

import pytest

from imagebuild.build.layers.debian import resolve_lock, source_of
from imagebuild.recipe.model import OsSpec, RuntimeSpec
from imagebuild.sources.debian_index import AptIndex, deb_identity

pytestmark = pytest.mark.integration


def test_a_resolve_from_the_kept_index_pins_what_a_fresh_one_does(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))     # nothing kept yet
    spec = OsSpec(debian="bookworm")
    fresh = resolve_lock(spec, RuntimeSpec(), log_dir=tmp_path / "fresh")
    index = AptIndex(source_of(spec))
    kept = {deb_identity(path.name) for path in (index.root / "archives").iterdir()}
    # the cache holds the packages the resolve installed (less the merged-usr hook's own dummy)
    assert kept <= set(fresh.os.items()) and len(kept) >= len(fresh.os) - 1
    # apt's binary cache of the lists is kept, so the next apt-cache call does not parse them again
    assert (index.root / "var/cache/apt/pkgcache.bin").stat().st_size > 0

    again = resolve_lock(spec, RuntimeSpec(), log_dir=tmp_path / "again")
    assert again.os == fresh.os and again.source_date_epoch == fresh.source_date_epoch
    assert again.packages == fresh.packages and again.os_release == fresh.os_release
    log = (tmp_path / "again" / "debian-os.log").read_text()
    assert "lists-" in log and "debs-" in log      # it started from the kept lists and files ...
    # ... so apt's update in the tree fetched the Release files at most, no package index
    assert not [line for line in log.splitlines() if line.startswith("Get:") and "Packages" in line]
