"""`--load`: the baked image loaded into the Docker engine (stores/engine.py streams it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagebuild.progress import Progress, human_size
from imagebuild.stores.engine import EngineSession, load_image
from imagebuild.stores.layout import LayoutStore

if TYPE_CHECKING:  # only for annotations: `imagebuild export` need not import the bake
    from imagebuild.build.bake import BakeInput, BakeResult


class EngineOutput:
    def __init__(self, engine: EngineSession):
        self.engine = engine            # shared with the bake, which may build an os.dockerfile base with it

    def check(self, source: BakeInput) -> None:
        """An engine answers (DOCKER_HOST, or the local socket)."""
        self.engine.client()

    def publish(self, result: BakeResult, store: LayoutStore, progress: Progress) -> None:
        report = load_image(store, result.digest, [result.local_ref], client=self.engine.client())
        sent = (f"sent {report.layers_sent} of {report.layers} layers, {human_size(report.bytes_sent)}"
                if report.layers_sent else "the engine had the image already")
        progress.note(f"loaded into Docker as {', '.join(report.tags) or result.local_ref} ({sent})")
