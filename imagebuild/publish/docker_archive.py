"""`docker-archive:FILE`: an image written as a `docker save` tarball, for `docker load`
(`bake --output`, `imagebuild export`). The file is written whole or not at all."""

from __future__ import annotations


from imagebuild.errors import UserError
from imagebuild.oci.model import Descriptor
from imagebuild.publish.path_output import PathOutput
from imagebuild.stores.archive import write_docker_archive
from imagebuild.stores.layout import LayoutStore

KIND = "docker-archive"


class DockerArchiveOutput(PathOutput):
    kind = KIND

    def _check(self) -> None:
        if self.path.is_dir():
            raise UserError(f"{self.path} is a directory; docker-archive needs a file path")
        if not self.path.parent.is_dir():
            raise UserError(f"directory {self.path.parent} does not exist", hint="create it or choose another path")

    def write(self, store: LayoutStore, descriptor: Descriptor, name: str, tag: str) -> None:
        self.check()  # again: the path may have changed since the bake began
        write_docker_archive(store, descriptor.digest, [f"{name}:{tag}"], str(self.path))
