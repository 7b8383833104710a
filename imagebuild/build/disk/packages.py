"""The Debian packages a disk adds to the image: the kernel, busybox (for the init), systemd-boot (UEFI).

Both come from the recipe's suite and mirror through apt, which checks them against the
suite's signed index; the .deb files are kept under the user's cache by name and version,
so a second bake downloads nothing. What a disk needs of a kernel package is the kernel
itself and the few modules that reach a virtual machine's disk and network.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from imagebuild.errors import BuildError, UserError
from imagebuild.sources.debian_index import AptIndex, DebianSource, cache_root

# Drivers for the disks and network cards virtual machines get (virtio, SCSI, IDE, emulated
# e1000), entropy from the host, FAT and ISO 9660 for a config drive, and the ACPI power
# button (with evdev, how it reports) for a graceful stop. Absent ones are left out: a kernel
# flavour may build them in or not ship them.
WANTED_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi", "sd_mod", "ata_piix", "ahci",
                  "nvme", "virtio_net", "e1000", "e1000e", "virtio_rng", "vfat", "nls_cp437", "nls_ascii",
                  "nls_utf8", "isofs", "sr_mod", "button", "evdev")


@dataclass(frozen=True)
class DebFile:
    name: str
    version: str
    path: Path


@dataclass(frozen=True)
class Kernel:
    package: str                      # the versioned image package, e.g. linux-image-6.1.0-26-cloud-amd64
    version: str
    release: str                      # uname -r
    vmlinuz: bytes
    modules: tuple[tuple[str, bytes], ...] = field(default=())   # (name, .ko bytes) in load order


def _deb_cache() -> Path:
    return cache_root().parent / "debs"


def fetch_deb(index: AptIndex, spec: str) -> DebFile:
    """The .deb of NAME (the candidate version) or NAME=VERSION, from the cache when its SHA256 matches the index."""
    fields = index.candidate(spec)
    name, version = fields.get("Package", spec.partition("=")[0]), fields["Version"]
    cache = _deb_cache() / index.source.suite
    cached = cache / Path(fields.get("Filename", f"{name}_{version}.deb")).name
    expected = fields.get("SHA256", "")
    if cached.exists() and expected and _sha256(cached) == expected:
        return DebFile(name, version, cached)
    cache.mkdir(parents=True, exist_ok=True)
    # a folder of its own: two bakes fetching the same package at once must not see each other's half file
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=cache) as partial:
        fetched = index.download(name, version, Path(partial))
        if expected and _sha256(fetched) != expected:
            raise BuildError(f"{fetched.name} does not match the SHA256 in the {index.source.suite} index")
        fetched.replace(cached)
    return DebFile(name, version, cached)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def deb_members(deb: DebFile) -> tarfile.TarFile:
    """The .deb's file system tree, read into memory."""
    done = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb.path)], capture_output=True)
    if done.returncode != 0:
        raise BuildError(f"dpkg-deb cannot read {deb.path.name}: {done.stderr.decode(errors='replace').strip()}")
    return tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r:")


def _image_package(index: AptIndex, spec: str) -> DebFile:
    """A kernel package, following a flavour's meta-package to the versioned one it depends on
    (to the exact version a pinned meta-package, NAME=VERSION, names)."""
    for _ in range(3):
        deb = fetch_deb(index, spec)
        with deb_members(deb) as tar:
            if any(re.fullmatch(r"\./boot/vmlinu[xz]-.*", member.name) for member in tar.getmembers()):
                return deb
        depends = index.candidate(spec).get("Depends", "")
        images = re.findall(r"(linux-image-[^\s,(|]+)(?:\s*\(=\s*([^)\s]+)\))?", depends)
        if not images:
            break
        name, version = images[0]
        spec = f"{name}={version}" if version else name
    raise UserError(f"the Debian package {spec} holds no kernel",
                    hint="disk.kernel names a kernel package such as linux-image-cloud-amd64, or NAME=VERSION")


def _depends(ko: bytes) -> list[str]:
    # .modinfo is a run of NUL-terminated key=value strings
    match = re.search(rb"\x00depends=([^\x00]*)\x00", ko)
    return [name for name in match.group(1).decode().split(",") if name] if match else []


def fetch_kernel(source: DebianSource, package: str) -> Kernel:
    index = AptIndex(source)
    deb = _image_package(index, package)
    vmlinuz = b""
    release = ""
    available: dict[str, bytes] = {}
    with deb_members(deb) as tar:
        for member in tar.getmembers():
            boot = re.fullmatch(r"\./boot/vmlinu[xz]-(.*)", member.name)
            if boot and member.isfile():
                vmlinuz, release = tar.extractfile(member).read(), boot.group(1)
            module = re.fullmatch(r"\./lib/modules/[^/]+/kernel/.*/([^/]+)\.ko", member.name)
            if module and member.isfile():
                available[module.group(1).replace("-", "_")] = tar.extractfile(member).read()
    if not vmlinuz:
        raise BuildError(f"{deb.path.name} holds no /boot/vmlinuz")
    order: list[str] = []

    def add(name: str) -> None:
        if name in order or name not in available:
            return
        for dependency in _depends(available[name]):
            add(dependency.replace("-", "_"))
        order.append(name)

    for wanted in WANTED_MODULES:
        add(wanted)
    return Kernel(deb.name, deb.version, release, vmlinuz, tuple((name, available[name]) for name in order))


def _deb_file(source: DebianSource, package: str, paths: tuple[str, ...]) -> tuple[str, bytes]:
    """(version, bytes of the first of PATHS) from the suite's PACKAGE."""
    deb = fetch_deb(AptIndex(source), package)
    with deb_members(deb) as tar:
        for member in tar.getmembers():
            if member.name in paths and member.isfile():
                return deb.version, tar.extractfile(member).read()
    raise BuildError(f"{deb.path.name} holds none of {', '.join(paths)}")


def fetch_busybox(source: DebianSource) -> tuple[str, bytes]:
    """(version, the static busybox binary) from the suite's busybox-static."""
    return _deb_file(source, "busybox-static", ("./bin/busybox", "./usr/bin/busybox"))


def fetch_systemd_boot(source: DebianSource) -> tuple[str, bytes] | None:
    """(version, systemd-boot's x86-64 EFI binary) from the suite's systemd-boot-efi; None where it has none."""
    try:
        return _deb_file(source, "systemd-boot-efi", ("./usr/lib/systemd/boot/efi/systemd-bootx64.efi",))
    except UserError:
        return None
