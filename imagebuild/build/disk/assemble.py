"""A raw disk from a root tar and boot files, with no loop device, mount or root privilege.

Layout (MBR; BIOS boots the active partition, UEFI the EFI system partition):
  partition 1: FAT16 `IMGBOOT`, active, type 0xEF (ESP): the kernel and initramfs,
               SYSLINUX and systemd-boot with their configuration
  partition 2: ext2 `imagebuild-root`: the image's files

Every tool runs on plain files: genext2fs builds the root file system straight from
the tar, mkfs.fat/mcopy/syslinux build the boot file system (mtools underneath),
sfdisk writes the partition table and syslinux's mbr.bin the boot code. Fixed
inputs (UUID, volume id, disk id from the image digest; times from the image's
creation time) make the bytes depend on the image alone.
"""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from imagebuild.build.disk.initramfs import ROOT_LABEL
from imagebuild.errors import BuildError, UserError

MIB = 1 << 20
BLOCK = 4096
BOOT_LABEL = "IMGBOOT"
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
FAT_EPOCH = 315532800         # 1980-01-01, the first time FAT can hold
FREE_SPACE = 64 * MIB          # room for the app's own writes (logs, caches) on the root file system
TOOLS = {"genext2fs": "genext2fs", "tune2fs": "e2fsprogs", "mkfs.fat": "dosfstools", "mcopy": "mtools", "mmd": "mtools",
         "syslinux": "syslinux", "sfdisk": "fdisk", "qemu-img": "qemu-utils"}


@dataclass(frozen=True)
class RootStats:
    entries: int
    content_bytes: int
    file_blocks: int          # 4 KiB blocks the files' bytes take, each file rounded up


def run_tool(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
             failure: str | None = None) -> None:
    """Run one of the disk's tools; a missing tool or a failure is one BuildError line (FAILURE: the tool's last)."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, input=stdin,
                              env=dict(os.environ, **(env or {})))
    except FileNotFoundError:
        package = TOOLS.get(args[0], args[0])
        raise BuildError(f"{args[0]} is not installed; a disk needs it (Debian package {package})") from None
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise BuildError(f"{failure or args[0] + ' failed'}: {detail[-1] if detail else f'exit {done.returncode}'}")


def _ceil(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def root_filesystem(tar: Path, stats: RootStats, out: Path, seed: str, epoch: int) -> int:
    """ext2 from the tar; returns its size in bytes (a whole number of MiB)."""
    inodes = _ceil(stats.entries + 4096, 1024)
    # data, one block per directory and long symlink at most, indirect blocks, inode tables, headroom
    blocks = (stats.file_blocks + stats.entries + stats.file_blocks // 1000 + inodes * 256 // BLOCK
              + FREE_SPACE // BLOCK)
    size = _ceil(int(blocks * 1.05) * BLOCK, MIB)
    # -z: blocks of zeros become holes, so a sparse file stays sparse (on the disk and in the image file)
    run_tool("genext2fs", "-B", str(BLOCK), "-b", str(size // BLOCK), "-N", str(inodes), "-L", ROOT_LABEL,
         "-m", "0", "-z", "-a", str(tar), str(out), env={"SOURCE_DATE_EPOCH": str(epoch)})
    fs_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"imagebuild-root:{seed}")
    run_tool("tune2fs", "-U", str(fs_uuid), str(out), env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    return size


def mtools_env(epoch: int) -> dict[str, str]:
    """mtools (and syslinux, built on it) stamp FAT entries with SOURCE_DATE_EPOCH, in local time: fix both."""
    return {"SOURCE_DATE_EPOCH": str(max(epoch, FAT_EPOCH)), "TZ": "UTC"}


def boot_filesystem(files: dict[str, bytes], out: Path, volume_id: str, epoch: int, work: Path) -> int:
    """FAT16 holding the files (paths may have folders) and SYSLINUX; returns its size in bytes."""
    size = max(16 * MIB, _ceil(sum(len(data) for data in files.values()) * 5 // 4 + 4 * MIB, MIB))
    run_tool("mkfs.fat", "-F", "16", "-C", "--invariant", "-i", volume_id, "-n", BOOT_LABEL, "-h", "2048",
         str(out), str(size // 1024))
    env = mtools_env(epoch)
    folders = sorted({"/".join(name.split("/")[:depth]) for name in files
                      for depth in range(1, name.count("/") + 1)})
    if folders:
        run_tool("mmd", "-i", str(out), *(f"::{folder}" for folder in folders), env=env)
    staged = work / "boot-files"
    staged.mkdir(exist_ok=True)
    for number, (name, data) in enumerate(sorted(files.items())):
        source = staged / str(number)
        source.write_bytes(data)
        run_tool("mcopy", "-i", str(out), str(source), f"::{name}", env=env)
    run_tool("syslinux", "--install", str(out), env=env)
    return size


def disk_image(boot: Path, boot_size: int, root: Path, root_size: int, out: Path, disk_id: str) -> int:
    """The partitioned raw disk; returns its size."""
    first = MIB
    total = first + boot_size + root_size
    with open(out, "wb") as handle:
        handle.truncate(total)
    table = (f"label: dos\nlabel-id: 0x{disk_id}\nunit: sectors\n"
             f"start={first // 512}, size={boot_size // 512}, type=ef, bootable\n"
             f"start={(first + boot_size) // 512}, size={root_size // 512}, type=83\n")
    run_tool("sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(out), stdin=table)
    with open(out, "r+b") as handle:
        handle.write(MBR_CODE.read_bytes()[:440])
        for source, offset in ((boot, first), (root, first + boot_size)):
            handle.seek(offset)
            with open(source, "rb") as data:
                while chunk := data.read(8 * MIB):
                    if chunk.count(0) == len(chunk):
                        handle.seek(len(chunk), 1)       # a hole: the file was made at its full size
                    else:
                        handle.write(chunk)
    return total


def boot_partition_offset(disk: Path) -> int:
    """Where partition 1 (the boot FAT) starts, from the MBR."""
    with open(disk, "rb") as handle:
        mbr = handle.read(512)
    # a bare FAT (a config drive) ends its boot sector with 55 AA too: the ESP type tells our disks apart
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa" or mbr[446 + 4] != 0xEF:
        raise UserError(f"{disk} is not a disk made by `bake --format disk` (no boot partition)",
                        hint="give the .qcow2 or .raw file that bake or `imagebuild disk write` wrote")
    start, = struct.unpack_from("<I", mbr, 446 + 8)
    return start * 512


def disk_format(disk: Path) -> str:
    """qcow2 or raw, by the qcow2 magic."""
    with open(disk, "rb") as handle:
        return "qcow2" if handle.read(4) == b"QFI\xfb" else "raw"


def to_qcow2(raw: Path, out: Path) -> None:
    """Compressed qcow2 (no timestamps in the format, so the bytes follow from the raw disk)."""
    run_tool("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zlib",
         str(raw), str(out))


def to_raw(qcow2: Path, out: Path) -> None:
    run_tool("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(qcow2), str(out))
