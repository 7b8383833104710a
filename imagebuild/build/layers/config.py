"""The config layer: every environment's settings, feature toggles and secret names.

It depends on the recipe only, so an app commit that leaves the recipe alone
finds it cached. The launcher reads these files at start (see imagebuild/launcher).
"""

from __future__ import annotations

import hashlib
from typing import Mapping

from imagebuild.build.launcher_files import config_files
from imagebuild.oci.layer import Entry
from imagebuild.plan import LayerInputs
from imagebuild.recipe.model import Recipe


def files(recipe: Recipe) -> Mapping[str, bytes]:
    return config_files(recipe)


def inputs(files: Mapping[str, bytes], epoch: int) -> LayerInputs:
    listing = {path: "sha256:" + hashlib.sha256(content).hexdigest() for path, content in files.items()}
    return LayerInputs("config", {"files": listing}, epoch)


def build_entries(files: Mapping[str, bytes]) -> list[Entry]:
    return [Entry.file(path, content) for path, content in sorted(files.items())]
