"""`docker-archive:FILE`: an image written as a `docker save` tarball, for `docker load`
(`bake --output`, `imagebuild export`). The file is written whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from imagebuild.errors import UserError, quoted
from imagebuild.oci.model import Descriptor
from imagebuild.progress import Progress
from imagebuild.stores.archive import write_docker_archive
from imagebuild.stores.layout import LayoutStore

if TYPE_CHECKING:  # only for annotations: `imagebuild export` need not import the bake
    from imagebuild.build.bake import BakeInput, BakeResult

KIND = "docker-archive"


class DockerArchiveOutput:
    def __init__(self, destination: str):
        self.destination = destination                 # as the user wrote it: docker-archive:FILE
        self.path = Path(destination.partition(":")[2])

    def check(self, source: BakeInput | None = None) -> None:
        try:
            self._check()
        except OSError as exc:  # ENAMETOOLONG, ELOOP, EACCES on a parent: the path given cannot be used
            raise UserError(f"cannot use {quoted(str(self.path))} for {KIND}: {exc.strerror or exc}",
                            hint="choose another (shorter) path") from None

    def _check(self) -> None:
        if self.path.is_dir():
            raise UserError(f"{self.path} is a directory; docker-archive needs a file path")
        if not self.path.parent.is_dir():
            raise UserError(f"directory {self.path.parent} does not exist", hint="create it or choose another path")

    def write(self, store: LayoutStore, descriptor: Descriptor, name: str, tag: str) -> None:
        self.check()  # again: the path may have changed since the bake began
        write_docker_archive(store, descriptor.digest, [f"{name}:{tag}"], str(self.path))

    def publish(self, result: BakeResult, store: LayoutStore, progress: Progress) -> None:
        name, _, tag = result.local_ref.rpartition(":")
        self.write(store, store.resolve(result.local_ref), name, tag)
        progress.note(f"wrote {self.destination}")
