"""The one interface every layer builder has, so a bake's layers are a list it walks.

A builder names its layer, gives the inputs its cache key is made from (the
plan chains them), and builds the layer into the store when the layer cache
has no entry for that key. Layers obtained before planning (the Debian os and
runtime layers, a base image's layers) are `Prebuilt`: they say themselves
whether they were cached, under keys of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

from imagebuild.oci.layer import LayerResult
from imagebuild.plan import LayerInputs
from imagebuild.stores.layout import LayoutStore

# A base image (os.image) is several layers under one plan entry.
Built = Union[LayerResult, tuple[LayerResult, ...]]


class LayerBuilder(Protocol):
    name: str
    inputs: LayerInputs         # what the layer's cache key is made from
    cached: bool | None         # None: look the key up in the layer cache; else known before planning
    seconds: float              # time already spent obtaining it before planning

    def build(self, store: LayoutStore) -> Built: ...


@dataclass
class Prebuilt:
    """A layer (or a base image's layers) obtained before planning, cached under its own key or not."""

    inputs: LayerInputs
    result: Built
    cached: bool | None = True
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.inputs.name

    def build(self, store: LayoutStore) -> Built:
        return self.result
