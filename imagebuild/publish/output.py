"""The outputs a bake is published to, and the parser from the bake command's options to them.

Every output is checked (`check`, given what the bake is made from) before anything is
built or written, then published (`publish`, given the baked image) after the bake, in
the order the options list them: `--output` destinations, `--load`, `--push`, the disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

from imagebuild.errors import UserError
from imagebuild.progress import Progress
from imagebuild.publish.disk import PREFIX as DISK_PREFIX, DiskOutput, disk_targets
from imagebuild.publish.engine import EngineOutput
from imagebuild.publish.registry import RegistryOutput
from imagebuild.stores.engine import EngineSession
from imagebuild.stores.layout import LayoutStore

if TYPE_CHECKING:  # only for annotations: `imagebuild export` need not import the bake
    from imagebuild.build.bake import BakeInput, BakeResult
    from imagebuild.publish.docker_archive import DockerArchiveOutput
    from imagebuild.publish.oci_dir import OciDirOutput

FORMATS = ("image", "disk")


class Output(Protocol):
    def check(self, source: BakeInput) -> None:
        """Refuse what would fail later (a bad path, no engine, no registry), writing nothing."""

    def publish(self, result: BakeResult, store: LayoutStore, progress: Progress) -> None:
        """Deliver the baked image."""


class Destination:
    """An `--output` other than disk:, parsed when checked: a bad kind is refused in its turn
    among the checks, after the recipe is read, as each path is."""

    def __init__(self, destination: str):
        self.destination = destination
        self.output: OciDirOutput | DockerArchiveOutput | None = None

    def check(self, source: BakeInput) -> None:
        from imagebuild.publish.export import destination_output     # only for an --output

        self.output = destination_output(self.destination)
        self.output.check(source)

    def publish(self, result: BakeResult, store: LayoutStore, progress: Progress) -> None:
        assert self.output is not None, "published before it was checked"
        self.output.publish(result, store, progress)


def parse_outputs(destinations: Sequence[str], *, load: bool = False, push: bool = False, form: str = "image",
                  insecure: bool | None = None, engine: EngineSession | None = None) -> list[Output]:
    """The bake command's --output (repeatable), --load, --push and --format as outputs, in publishing order."""
    if form not in FORMATS:
        raise UserError(f"--format {form!r} is neither image nor disk")
    wanted = [item for item in destinations if item.startswith(DISK_PREFIX)]
    if wanted and form != "disk":
        raise UserError(f"{wanted[0]} needs --format disk")
    targets = disk_targets(wanted)
    outputs: list[Output] = [Destination(item) for item in destinations if not item.startswith(DISK_PREFIX)]
    if load:
        outputs.append(EngineOutput(engine or EngineSession()))
    if push:
        outputs.append(RegistryOutput(insecure))
    if form == "disk":
        outputs.append(DiskOutput(targets, push, insecure))
    return outputs
