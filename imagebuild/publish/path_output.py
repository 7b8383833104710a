"""What `oci:DIR` and `docker-archive:FILE` share: a path given by the user, checked before the
bake (and again before writing, as the file system may have changed), and the baked image written
there under its NAME:VERSION."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from imagebuild.errors import UserError, quoted
from imagebuild.oci.model import Descriptor
from imagebuild.progress import Progress
from imagebuild.stores.layout import LayoutStore

if TYPE_CHECKING:  # only for annotations: `imagebuild export` need not import the bake
    from imagebuild.build.bake import BakeInput, BakeResult


class PathOutput:
    kind = ""

    def __init__(self, destination: str):
        self.destination = destination                 # as the user wrote it: KIND:PATH
        self.path = Path(destination.partition(":")[2])

    def check(self, source: BakeInput | None = None) -> None:
        try:
            self._check()
        except OSError as exc:  # ENAMETOOLONG, ELOOP, EACCES on a parent: the path given cannot be used
            raise UserError(f"cannot use {quoted(str(self.path))} for {self.kind}: {exc.strerror or exc}",
                            hint="choose another (shorter) path") from None

    def _check(self) -> None:
        """Refuse a path the output cannot be written to; OSError for one the file system refuses."""
        raise NotImplementedError

    def write(self, store: LayoutStore, descriptor: Descriptor, name: str, tag: str) -> None:
        raise NotImplementedError

    def publish(self, result: BakeResult, store: LayoutStore, progress: Progress) -> None:
        name, _, tag = result.local_ref.rpartition(":")
        self.write(store, store.resolve(result.local_ref), name, tag)
        progress.note(f"wrote {self.destination}")
