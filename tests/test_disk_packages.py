"""The kernel and busybox a disk adds, from the suite's packages; the initramfs they go into."""

from __future__ import annotations

import gzip
import subprocess

import pytest

from imagebuild.build.disk.initramfs import build_initramfs
from imagebuild.build.disk.packages import fetch_busybox, fetch_kernel
from imagebuild.errors import UserError
from imagebuild.sources.debian_index import AptIndex, DebianSource

pytestmark = pytest.mark.integration

SOURCE = DebianSource()


@pytest.fixture(scope="module")
def kernel():
    return fetch_kernel(SOURCE, "linux-image-cloud-amd64")


def test_the_flavour_is_followed_to_a_kernel_with_the_drivers_in_load_order(kernel):
    assert kernel.package.startswith("linux-image-") and kernel.release in kernel.package
    assert kernel.vmlinuz[0x202:0x206] == b"HdrS"           # the x86 boot protocol header
    names = [name for name, _ in kernel.modules]
    for needed in ("virtio_pci", "virtio_blk", "virtio_net"):
        assert needed in names
    # every module after what it depends on
    assert names.index("virtio_ring") < names.index("virtio") < names.index("virtio_pci") < names.index("virtio_blk")
    assert names.index("failover") < names.index("net_failover") < names.index("virtio_net")


def test_a_pinned_version_gives_that_version(kernel):
    version = AptIndex(SOURCE).candidate("linux-image-cloud-amd64")["Version"]
    pinned = fetch_kernel(SOURCE, f"linux-image-cloud-amd64={version}")
    assert (pinned.package, pinned.version, pinned.vmlinuz) == (kernel.package, kernel.version, kernel.vmlinuz)


@pytest.mark.parametrize("spec", ["busybox-static", "linux-image-cloud-amd64=0.0-not-there", "no-such-kernel-pkg"])
def test_what_is_not_a_kernel_is_refused_in_one_line(spec):
    with pytest.raises(UserError) as refused:
        fetch_kernel(SOURCE, spec)
    assert spec.partition("=")[0] in refused.value.one_line()


def test_the_initramfs_is_a_fixed_newc_archive_cpio_reads(kernel, tmp_path):
    version, busybox = fetch_busybox(SOURCE)
    assert busybox.startswith(b"\x7fELF") and version
    first = build_initramfs(kernel, busybox, "#!/bin/sh\n", 1_700_000_000)
    assert first == build_initramfs(kernel, busybox, "#!/bin/sh\n", 1_700_000_000)
    archive = tmp_path / "initrd.cpio"
    archive.write_bytes(gzip.decompress(first))
    listed = subprocess.run(["busybox", "cpio", "-t", "-F", str(archive)], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert names == sorted(names)
    for name in ("init", "bin/busybox", "start", "dhcp", "dev/console", "lib/modules/virtio_blk.ko"):
        assert name in names



def test_bakes_fetching_one_package_at_once_each_get_it_whole(tmp_path, monkeypatch):
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from imagebuild.build.disk import packages

    monkeypatch.setattr(packages, "_deb_cache", lambda: tmp_path / "debs")     # an empty cache: both download
    index = AptIndex(SOURCE)
    expected = index.candidate("busybox-static")["SHA256"]
    with ThreadPoolExecutor(2) as pool:
        fetched = list(pool.map(lambda _: packages.fetch_deb(index, "busybox-static"), range(2)))
    assert fetched[0].path == fetched[1].path
    assert hashlib.sha256(fetched[0].path.read_bytes()).hexdigest() == expected
    assert [path.name for path in fetched[0].path.parent.iterdir()] == [fetched[0].path.name]   # nothing half-done
