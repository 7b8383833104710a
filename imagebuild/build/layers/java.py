"""The JVM app's layers, Jib's way: release dependencies, snapshot dependencies, resources, classes.

Each group of the build output (imagebuild/sources/java_build.py) becomes its
own layer, keyed by the content of its files, so a commit that changes one
class rebuilds and pushes the classes layer only. The files are dated by a
fixed time (one second after the epoch, as Jib does) instead of the commit:
the same bytes in give the same layer, whichever commit they come from.
"""

from __future__ import annotations

import hashlib
import posixpath

from imagebuild.build.cache import store_layer
from imagebuild.oci.layer import DIR, FILE, Entry, LayerResult
from imagebuild.plan import LayerInputs
from imagebuild.recipe.model import Recipe
from imagebuild.sources.java_build import CLASSES, LIBS, RESOURCES, JavaFile, JavaParts
from imagebuild.stores.layout import LayoutStore

# Jib's file time: not the epoch itself, which some tools take for "no time".
JAVA_EPOCH = 1


def _sha256(file: JavaFile) -> str:
    hasher = hashlib.sha256()
    with open(file.source, "rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


class JavaLayer:
    """One group of the build output under <app.dest>/<directory>."""

    cached = None
    seconds = 0.0

    def __init__(self, name: str, recipe: Recipe, directory: str, files: tuple[JavaFile, ...]):
        self.name, self.recipe, self.files = name, recipe, files
        self.prefix = posixpath.join(recipe.app.dest.strip("/"), directory)
        listing = hashlib.sha256()
        for file in files:
            listing.update(f"{file.path}\0{_sha256(file)}\0".encode("utf-8", "surrogateescape"))
        self.inputs = LayerInputs(name, {"files": "sha256:" + listing.hexdigest(), "prefix": self.prefix},
                                  JAVA_EPOCH)

    def entries(self) -> list[Entry]:
        entries = [Entry(self.recipe.app.dest.strip("/"), DIR, 0o755), Entry(self.prefix, DIR, 0o755)]
        for file in self.files:
            size = file.source.stat().st_size
            entries.append(Entry(posixpath.join(self.prefix, file.path), FILE, 0o644, JAVA_EPOCH, size,
                                 opener=lambda source=file.source: open(source, "rb")))
        return entries

    def build(self, store: LayoutStore) -> LayerResult:
        return store_layer(store, self.entries(), JAVA_EPOCH)


def java_layers(recipe: Recipe, parts: JavaParts) -> list[JavaLayer]:
    """The layers of the groups that hold files, bottom to top."""
    groups = [("libraries", LIBS, parts.release), ("snapshots", LIBS, parts.snapshots),
              ("resources", RESOURCES, parts.resources), ("classes", CLASSES, parts.classes)]
    return [JavaLayer(name, recipe, directory, files) for name, directory, files in groups if files]
