"""A raw disk from a root tar and boot files, with no loop device, mount or root privilege.

Layout (MBR, for BIOS boot, which every x86 hypervisor offers):
  partition 1: FAT16 `IMGBOOT`, bootable: SYSLINUX, syslinux.cfg, the kernel and initramfs
  partition 2: ext2 `imagebuild-root`: the image's files

Every tool runs on plain files: genext2fs builds the root file system straight from
the tar, mkfs.fat/mcopy/syslinux build the boot file system (mtools underneath),
sfdisk writes the partition table and syslinux's mbr.bin the boot code. Fixed
inputs (UUID, volume id, disk id from the image digest; times from the image's
creation time) make the bytes depend on the image alone.
"""

from __future__ import annotations

import calendar
import os
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from imagebuild.disk.initramfs import ROOT_LABEL
from imagebuild.errors import BuildError

MIB = 1 << 20
BLOCK = 4096
BOOT_LABEL = "IMGBOOT"
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
FREE_SPACE = 64 * MIB          # room for the app's own writes (logs, caches) on the root file system
TOOLS = {"genext2fs": "genext2fs", "tune2fs": "e2fsprogs", "mkfs.fat": "dosfstools", "mcopy": "mtools",
         "syslinux": "syslinux", "sfdisk": "fdisk", "qemu-img": "qemu-utils"}


@dataclass(frozen=True)
class RootStats:
    entries: int
    content_bytes: int
    file_blocks: int          # 4 KiB blocks the files' bytes take, each file rounded up


def _run(*args: str, env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True,
                              env=dict(os.environ, **(env or {})))
    except FileNotFoundError:
        package = TOOLS.get(args[0], args[0])
        raise BuildError(f"{args[0]} is not installed; a disk needs it (Debian package {package})") from None
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise BuildError(f"{args[0]} failed: {detail[-1] if detail else f'exit {done.returncode}'}")


def _ceil(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def root_filesystem(tar: Path, stats: RootStats, out: Path, seed: str, epoch: int) -> int:
    """ext2 from the tar; returns its size in bytes (a whole number of MiB)."""
    inodes = _ceil(stats.entries + 4096, 1024)
    # data, one block per directory and long symlink at most, indirect blocks, inode tables, headroom
    blocks = (stats.file_blocks + stats.entries + stats.file_blocks // 1000 + inodes * 256 // BLOCK
              + FREE_SPACE // BLOCK)
    size = _ceil(int(blocks * 1.05) * BLOCK, MIB)
    _run("genext2fs", "-B", str(BLOCK), "-b", str(size // BLOCK), "-N", str(inodes), "-L", ROOT_LABEL,
         "-m", "0", "-a", str(tar), str(out), env={"SOURCE_DATE_EPOCH": str(epoch)})
    fs_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"imagebuild-root:{seed}")
    _run("tune2fs", "-U", str(fs_uuid), str(out), env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    return size


def boot_filesystem(files: dict[str, bytes], out: Path, volume_id: str, epoch: int, work: Path) -> int:
    """FAT16 holding the files and SYSLINUX; returns its size in bytes."""
    size = max(16 * MIB, _ceil(sum(len(data) for data in files.values()) * 5 // 4 + 4 * MIB, MIB))
    _run("mkfs.fat", "-F", "16", "-C", "--invariant", "-i", volume_id, "-n", BOOT_LABEL, "-h", "2048",
         str(out), str(size // 1024))
    staged = work / "boot-files"
    staged.mkdir(exist_ok=True)
    for name, data in sorted(files.items()):
        (staged / name).write_bytes(data)
        _run("mcopy", "-i", str(out), str(staged / name), f"::{name}")
    _run("syslinux", "--install", str(out))
    fix_fat_times(out, epoch)
    return size


def _dos_time(epoch: int) -> tuple[int, int]:
    moment = time.gmtime(max(epoch, calendar.timegm((1980, 1, 1, 0, 0, 0))))
    day = ((moment.tm_year - 1980) << 9) | (moment.tm_mon << 5) | moment.tm_mday
    clock = (moment.tm_hour << 11) | (moment.tm_min << 5) | (moment.tm_sec // 2)
    return day, clock


def fix_fat_times(image: Path, epoch: int, offset: int = 0) -> None:
    """Give every root directory entry of the FAT16 at OFFSET the same times (mtools stamps files with now)."""
    day, clock = _dos_time(epoch)
    with open(image, "r+b") as handle:
        handle.seek(offset)
        boot = handle.read(512)
        sector, = struct.unpack_from("<H", boot, 11)
        reserved, = struct.unpack_from("<H", boot, 14)
        fats = boot[16]
        root_entries, = struct.unpack_from("<H", boot, 17)
        fat_sectors, = struct.unpack_from("<H", boot, 22)
        start = offset + (reserved + fats * fat_sectors) * sector
        handle.seek(start)
        table = bytearray(handle.read(root_entries * 32))
        for offset in range(0, len(table), 32):
            first, attributes = table[offset], table[offset + 11]
            if first == 0:
                break
            if first == 0xE5 or attributes == 0x0F or attributes & 0x08:
                continue          # deleted, long-name part or the volume label
            struct.pack_into("<BHHH", table, offset + 13, 0, clock, day, day)
            struct.pack_into("<HH", table, offset + 22, clock, day)
        handle.seek(start)
        handle.write(table)


def disk_image(boot: Path, boot_size: int, root: Path, root_size: int, out: Path, disk_id: str) -> int:
    """The partitioned raw disk; returns its size."""
    first = MIB
    total = first + boot_size + root_size
    with open(out, "wb") as handle:
        handle.truncate(total)
    table = (f"label: dos\nlabel-id: 0x{disk_id}\nunit: sectors\n"
             f"start={first // 512}, size={boot_size // 512}, type=6, bootable\n"
             f"start={(first + boot_size) // 512}, size={root_size // 512}, type=83\n")
    done = subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(out)], input=table,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"sfdisk failed: {done.stderr.strip()}")
    with open(out, "r+b") as handle:
        handle.write(MBR_CODE.read_bytes()[:440])
        for source, offset in ((boot, first), (root, first + boot_size)):
            handle.seek(offset)
            with open(source, "rb") as data:
                while chunk := data.read(8 * MIB):
                    handle.write(chunk)
    return total


def boot_partition_offset(disk: Path) -> int:
    """Where partition 1 (the boot FAT) starts, from the MBR."""
    with open(disk, "rb") as handle:
        mbr = handle.read(512)
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
        raise BuildError(f"{disk} has no partition table")
    start, = struct.unpack_from("<I", mbr, 446 + 8)
    return start * 512


def disk_format(disk: Path) -> str:
    """qcow2 or raw, by the qcow2 magic."""
    with open(disk, "rb") as handle:
        return "qcow2" if handle.read(4) == b"QFI\xfb" else "raw"


def to_qcow2(raw: Path, out: Path) -> None:
    """Compressed qcow2 (no timestamps in the format, so the bytes follow from the raw disk)."""
    _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zlib",
         str(raw), str(out))


def to_raw(qcow2: Path, out: Path) -> None:
    _run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(qcow2), str(out))
