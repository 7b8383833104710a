"""Helpers for tests that need a small real image: busybox-static plus applet symlinks."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from imagebuild.build.images_from_dir import image_from_directory
from imagebuild.oci.model import Descriptor
from imagebuild.stores.layout import LayoutStore

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "ls", "true")
HELLO = "hello from imagebuild"
HELLO_ENTRYPOINT = ["/bin/busybox", "echo", HELLO]


def static_busybox() -> Path:
    """/bin/busybox from busybox-static; a dynamic one would not run in an image without libc."""
    if not BUSYBOX.is_file():
        raise AssertionError("busybox-static is not installed; run `make setup`")
    described = subprocess.run(["file", "-L", str(BUSYBOX)], capture_output=True, text=True).stdout
    if "statically linked" not in described:
        raise AssertionError(f"{BUSYBOX} is not statically linked ({described.strip()}); install busybox-static")
    return BUSYBOX


def make_busybox_rootfs(root: Path, extra_files: dict[str, bytes] | None = None) -> Path:
    """A root filesystem: bin/busybox, applet symlinks, and optional extra files."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(static_busybox(), bin_dir / "busybox")
    os.chmod(bin_dir / "busybox", 0o755)
    for applet in APPLETS:
        (bin_dir / applet).symlink_to("busybox")
    for rel, data in (extra_files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def build_busybox_image(store: LayoutStore, workdir: Path, name: str, *, compression: str = "gzip",
                        entrypoint: list[str] | None = None, source_date_epoch: int = 1_700_000_000) -> Descriptor:
    """Build the busybox image into `store` with the library, as `imagebuild image from-dir` does."""
    rootfs = make_busybox_rootfs(workdir / f"rootfs-{compression}")
    return image_from_directory(store, rootfs, name, entrypoint=entrypoint or HELLO_ENTRYPOINT,
                                compression=compression, source_date_epoch=source_date_epoch)


def tar_members(blob: bytes) -> list[tarfile.TarInfo]:
    """Members of a layer tar given its uncompressed bytes."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        return tar.getmembers()


def raw_headers(tar_bytes: bytes) -> list[tuple[bytes, bytes]]:
    """(512-byte header, payload) for every block-level entry, PAX headers included, in stream order."""
    out, offset = [], 0
    while offset + 512 <= len(tar_bytes):
        header = tar_bytes[offset:offset + 512]
        if header == b"\0" * 512:
            break
        size = int(header[124:136].rstrip(b"\0 ").decode() or "0", 8)
        payload = tar_bytes[offset + 512:offset + 512 + size]
        out.append((header, payload))
        offset += 512 + (size + 511) // 512 * 512
    return out
