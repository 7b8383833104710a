"""`--format disk`: a bootable VM disk of the baked image, stored as NAME:VERSION-disk beside it,
written to each `disk:FILE` output and, with --push, pushed beside the image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from imagebuild.oci.reference import Reference
from imagebuild.progress import Progress
from imagebuild.publish.registry import pushed_name, registry_target
from imagebuild.stores.layout import LayoutStore

if TYPE_CHECKING:  # only for annotations: `imagebuild export` need not import the bake
    from imagebuild.build.bake import BakeInput, BakeResult
    from imagebuild.build.disk.artifact import DiskResult

# The disk modules are imported only for a disk output: a bake without one need not load them.

PREFIX = "disk:"


def disk_targets(destinations: Sequence[str]) -> list[Path]:
    """Each `disk:FILE` output's path, refused unless FILE is .qcow2, .raw or .img in a directory that exists."""
    if not destinations:
        return []
    from imagebuild.build.disk.artifact import check_disk_output

    return [check_disk_output(item) for item in destinations]


class DiskOutput:
    def __init__(self, targets: Sequence[Path] = (), push: bool = False, insecure: bool | None = None):
        self.targets = list(targets)
        self.push = push
        self.insecure = insecure
        self.disk: DiskResult | None = None     # once built (or found in the store)

    def check(self, source: BakeInput) -> None:
        """A disk boots x86-64 machines only: an arm64 recipe is refused before its image is baked."""
        from imagebuild.build.disk.from_recipe import refuse_unbootable

        refuse_unbootable(source.recipe)

    def publish(self, result: BakeResult, store: LayoutStore, progress: Progress) -> None:
        from imagebuild.build.disk.artifact import disk_ref, write_disk
        from imagebuild.build.disk.from_recipe import bake_recipe_disk

        started = time.monotonic()
        progress.begin(1)
        try:
            progress.layer_started("disk")
            disk = bake_recipe_disk(result.recipe, store, result.local_ref)
            progress.layer_done("disk", disk.cached, disk.qcow2_size, time.monotonic() - started)
        finally:
            progress.end()
        for target in self.targets:
            write_disk(store, disk.reference, target)
        if self.push:
            image = pushed_name(registry_target(result.recipe, result.local_ref))
            from imagebuild.stores.registry import push_image  # httpx: only when a disk is pushed
            push_image(store, disk.reference, Reference.parse(disk_ref(image)), insecure=self.insecure)
        self.disk = disk
