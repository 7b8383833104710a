"""The config layer: every environment's settings, feature toggles and secret names.

It depends on the recipe only, so an app commit that leaves the recipe alone
finds it cached. The launcher reads these files at start (see imagebuild/launcher).
"""

from __future__ import annotations

import hashlib
from typing import Mapping

from imagebuild.build.cache import store_layer
from imagebuild.build.launcher_files import config_files
from imagebuild.oci.layer import Entry, LayerResult
from imagebuild.plan import LayerInputs
from imagebuild.recipe.model import Recipe
from imagebuild.stores.layout import LayoutStore


def files(recipe: Recipe) -> Mapping[str, bytes]:
    return config_files(recipe)


def inputs(files: Mapping[str, bytes], epoch: int) -> LayerInputs:
    listing = {path: "sha256:" + hashlib.sha256(content).hexdigest() for path, content in files.items()}
    return LayerInputs("config", {"files": listing}, epoch)


def build_entries(files: Mapping[str, bytes]) -> list[Entry]:
    return [Entry.file(path, content) for path, content in sorted(files.items())]


class ConfigLayer:
    """The config layer's builder, dated by the recipe."""

    name = "config"
    cached = None
    seconds = 0.0

    def __init__(self, recipe: Recipe, epoch: int):
        self.files = files(recipe)
        self.epoch = epoch
        self.inputs = inputs(self.files, epoch)

    def build(self, store: LayoutStore) -> LayerResult:
        return store_layer(store, build_entries(self.files), self.epoch)
