"""`oci:DIR`: an image written to an OCI layout directory (`bake --output`, `imagebuild export`).

A new layout is staged beside DIR and renamed into place, so a failure (a corrupt
blob, a full disk) leaves no half-made directory; an existing layout gets the
blobs first and the tag last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from imagebuild.errors import UserError
from imagebuild.oci.model import Descriptor
from imagebuild.publish.path_output import PathOutput
from imagebuild.stores.layout import LayoutStore, os_error_for
from imagebuild.stores.lease import LEASE_FILE, release_lease
from imagebuild.stores.copy import copy
from imagebuild.stores.place import LayoutPlace

KIND = "oci"


class OciDirOutput(PathOutput):
    kind = KIND

    def _check(self) -> None:
        target = self.path
        if target.exists():
            if not target.is_dir():
                raise UserError(f"{target} exists and is not a directory", hint="choose a directory path for oci:DIR")
            if not (target / "oci-layout").is_file() and any(target.iterdir()):
                raise UserError(f"{target} is neither an OCI layout (no oci-layout file) nor empty",
                                hint="choose a new or empty directory, or an existing layout")
            return
        if not target.parent.is_dir():
            raise UserError(f"directory {target.parent} does not exist", hint="create it or choose another path")

    def write(self, store: LayoutStore, descriptor: Descriptor, name: str, tag: str) -> None:
        """The image DESCRIPTOR names, tagged TAG in the layout (the layout's tags carry no name)."""
        self.check()  # again: the directory may have changed since the bake began
        if (self.path / "oci-layout").is_file():
            _add_to_layout(store, descriptor, self.path, tag)
        else:
            _new_layout(store, descriptor, self.path, tag)


def _new_layout(store: LayoutStore, descriptor: Descriptor, target: Path, tag: str) -> None:
    parent = target.parent
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.tmp-"))
    except OSError as exc:
        raise os_error_for(parent, exc) from None
    try:
        _export_into(store, descriptor, LayoutStore(staging), tag)
        _drop_store_files(staging, lock_was_there=False)
        os.chmod(staging, 0o755)
        # Replaces an empty directory too (rename(2) allows that).
        os.rename(staging, target)
    except OSError as exc:
        raise os_error_for(target, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _add_to_layout(store: LayoutStore, descriptor: Descriptor, target: Path, tag: str) -> None:
    lock_was_there = (target / ".lock").exists()
    lease_was_there = (target / LEASE_FILE).exists()
    _export_into(store, descriptor, LayoutStore(target), tag)
    _drop_store_files(target, lock_was_there, lease_was_there)


def _export_into(store: LayoutStore, descriptor: Descriptor, layout: LayoutStore, tag: str) -> None:
    """The image's blobs (verified) and exact manifest bytes into `layout`, under the bare `tag`."""
    layout.ensure()
    copy(LayoutPlace(store), LayoutPlace(layout), descriptor.digest, [tag], platform=descriptor.platform)


def _drop_store_files(layout: Path, lock_was_there: bool, lease_was_there: bool = False) -> None:
    """The store's own lock and lease files and temp directory are no part of a handed-over layout."""
    if not lock_was_there:
        (layout / ".lock").unlink(missing_ok=True)
    if not lease_was_there:
        release_lease(layout)
        (layout / LEASE_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (layout / "tmp").rmdir()
