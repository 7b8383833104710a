"""One image in the local store → one bootable disk (raw and qcow2).

The disk's root file system is the image's layers applied in order; the boot
partition holds a Debian kernel, an initramfs with the drivers and the start
script, SYSLINUX (BIOS) and systemd-boot (UEFI). The kernel command line carries no environment: give it at
boot (`imagebuild.env=NAME`, see `imagebuild disk set-env`) or on a config drive.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from imagebuild.build.disk import assemble
from imagebuild.build.disk.initramfs import build_initramfs
from imagebuild.build.disk.packages import fetch_busybox, fetch_kernel, fetch_systemd_boot
from imagebuild.build.disk.rootfs import Budget, MergedTree, image_layers
from imagebuild.build.disk.start import launch_of, start_script
from imagebuild.sources.debian_index import DebianSource
from imagebuild.oci.model import ParsedManifest
from imagebuild.recipe.model import DiskSpec
from imagebuild.stores.layout import LayoutStore

# Bumped whenever the same image and packages would give other disk bytes.
DISK_FORMAT = 6
BASE_CMDLINE = "console=tty0 console=ttyS0,115200 panic=10 quiet"


def boot_configs(cmdline: str) -> dict[str, bytes]:
    """The boot loaders' configuration (SYSLINUX for BIOS, systemd-boot for UEFI): one entry, no menu."""
    return {
        "syslinux.cfg": ("DEFAULT imagebuild\nPROMPT 0\nTIMEOUT 0\n"
                         "LABEL imagebuild\n  LINUX /vmlinuz\n  INITRD /initrd.img\n"
                         f"  APPEND {cmdline}\n").encode(),
        "loader/loader.conf": b"timeout 0\ndefault imagebuild.conf\neditor no\n",
        "loader/entries/imagebuild.conf": ("title imagebuild\nlinux /vmlinuz\ninitrd /initrd.img\n"
                                           f"options {cmdline}\n").encode(),
    }


@dataclass(frozen=True)
class BuiltDisk:
    raw: Path
    qcow2: Path
    raw_size: int
    raw_digest: str                   # sha256:... of the raw disk: the disk's identity
    kernel: str                       # package=version
    kernel_release: str
    busybox: str                      # version of busybox-static
    systemd_boot: str                 # version of systemd-boot-efi, "" when the disk boots by BIOS only
    root_size: int


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def build_disk(store: LayoutStore, manifest: ParsedManifest, source: DebianSource, kernel_package: str,
               workdir: Path, hostname: str, max_size: int = DiskSpec().max_bytes) -> BuiltDisk:
    """Build the raw and qcow2 disks of the image into WORKDIR; the layers may expand to MAX_SIZE bytes
    (decompressed, and the files at their full length), which is checked before anything is fetched."""
    config = store.read_config(manifest)
    created = str(config.get("created") or "")
    epoch = _epoch(created)
    seed = str(manifest.digest)
    layers = list(image_layers(store, list(manifest.layers), workdir, Budget(max_size)))
    root_tar = workdir / "root.tar"
    with MergedTree(layers) as tree:
        Budget(max_size).spend(tree.content_bytes(), "the image's files (sparse ones at full length)")
        launch = launch_of(config, tree, seed)
        with open(root_tar, "wb") as out:
            entries, content = tree.write_tar(out)
        file_blocks = tree.data_blocks(assemble.BLOCK)
    for layer in layers:
        layer.unlink()
    kernel = fetch_kernel(source, kernel_package)
    busybox_version, busybox = fetch_busybox(source)
    systemd_boot = fetch_systemd_boot(source)
    initrd = build_initramfs(kernel, busybox, start_script(launch, hostname), epoch)
    root_image, boot_image = workdir / "root.ext2", workdir / "boot.fat"
    root_size = assemble.root_filesystem(root_tar, assemble.RootStats(entries, content, file_blocks),
                                         root_image, seed, epoch)
    root_tar.unlink()
    ident = hashlib.sha256(seed.encode()).hexdigest()
    boot_files = {"vmlinuz": kernel.vmlinuz, "initrd.img": initrd, **boot_configs(BASE_CMDLINE)}
    if systemd_boot is not None:
        boot_files["EFI/BOOT/BOOTX64.EFI"] = systemd_boot[1]     # the default path UEFI boots from an ESP
    boot_size = assemble.boot_filesystem(boot_files, boot_image, ident[:8], epoch, workdir)
    raw = workdir / "disk.raw"
    size = assemble.disk_image(boot_image, boot_size, root_image, root_size, raw, ident[8:16])
    root_image.unlink()
    boot_image.unlink()
    qcow2 = workdir / "disk.qcow2"
    assemble.to_qcow2(raw, qcow2)
    return BuiltDisk(raw, qcow2, size, _sha256(raw), f"{kernel.package}={kernel.version}", kernel.release,
                     busybox_version, systemd_boot[0] if systemd_boot else "", root_size)


def _epoch(created: str) -> int:
    import datetime
    try:
        return int(datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
