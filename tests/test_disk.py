"""`bake --format disk`: the Flask example as a bootable VM disk, booted under qemu, and every other
stock recipe's example booted once.

Two clean bakes of the same commit (separate stores) are made once per session,
and each other example's disk once, when a test first needs it;
the boot tests run the disk under qemu-system-x86_64 with user-mode networking
and the app's port forwarded to a free loopback port, with KVM when it can run
the guest (see imagebuild/release/disk/qemu.py), else TCG. The boot bound is generous:
TCG on a loaded machine is slow; the measured times are in docs/disk.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagebuild.release.disk.qemu import boot_file, booted, kvm_usable, press_power_button, qemu_command
from tests.bake_support import bake, base_for, example_repo, http_get, seed
from tests.conftest import imagebuild
from tests.ports import free_port

pytestmark = pytest.mark.integration

BOOT_BOUND_SECONDS = 600
GUEST_PORT = 8000


@dataclass(frozen=True)
class BakedDisk:
    result: dict
    store: Path
    qcow2: Path
    raw: Path


def _bake_disk(tmp_path_factory, base, name: str, example: str = "flask-hello") -> BakedDisk:
    root = tmp_path_factory.mktemp(name)
    repo = example_repo(root, example, lock=base.lock_path)
    store = seed(root / "store", base)
    qcow2, raw = root / f"{example}.qcow2", root / f"{example}.raw"
    done = bake(repo, store.root, "--format", "disk", "--json", "-o", f"disk:{qcow2}", "-o", f"disk:{raw}")
    assert done.returncode == 0, done.stderr
    return BakedDisk(json.loads(done.stdout), store.root, qcow2, raw)


@pytest.fixture(scope="session")
def flask_disks(tmp_path_factory) -> tuple[BakedDisk, BakedDisk]:
    base = base_for("flask-hello", tmp_path_factory)
    return _bake_disk(tmp_path_factory, base, "disk-a"), _bake_disk(tmp_path_factory, base, "disk-b")


@pytest.fixture(scope="session")
def example_disk(tmp_path_factory):
    """EXAMPLE's disk, baked the first time a test asks for it and shared for the session."""
    baked: dict[str, BakedDisk] = {}

    def disk(example: str) -> BakedDisk:
        if example not in baked:
            base = base_for(example, tmp_path_factory)
            baked[example] = _bake_disk(tmp_path_factory, base, f"disk-{example}", example)
        return baked[example]
    return disk


@pytest.fixture(scope="session")
def accelerator(flask_disks, tmp_path_factory) -> str:
    kernel = boot_file(flask_disks[0].raw, "vmlinuz", tmp_path_factory.mktemp("kernel") / "vmlinuz")
    return "kvm" if kvm_usable(kernel) else "tcg"




def wait_for_health(port: int, process: subprocess.Popen, console: Path, path: str = "/health") -> float:
    """Seconds until PATH answers 200 (bounded); fail with the console if it never does."""
    started = time.monotonic()
    while time.monotonic() - started < BOOT_BOUND_SECONDS:
        try:
            status, body = http_get(f"http://127.0.0.1:{port}{path}", timeout=3)
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(1)
    raise AssertionError(f"the VM never answered /health; console:\n{console.read_text(errors='replace')[-4000:]}")


@contextlib.contextmanager
def _cli_booted(command: list[str], console: Path):
    """`imagebuild disk boot` in its own process group, so that stopping it stops its qemu too."""
    with open(console, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def test_two_clean_bakes_give_the_same_disk(flask_disks):
    first, second = flask_disks
    assert first.result["digest"] == second.result["digest"]
    disk_a, disk_b = first.result["disk"], second.result["disk"]
    assert disk_a["cached"] is False
    assert disk_a["raw_digest"] == disk_b["raw_digest"]
    assert disk_a["digest"] == disk_b["digest"]
    assert first.qcow2.read_bytes() == second.qcow2.read_bytes()
    assert subprocess.run(["cmp", "-s", str(first.raw), str(second.raw)]).returncode == 0
    assert disk_a["raw_size"] == first.raw.stat().st_size
    raw_digest = hashlib.sha256()
    with open(first.raw, "rb") as raw:
        while chunk := raw.read(1 << 22):
            raw_digest.update(chunk)
    assert disk_a["raw_digest"] == "sha256:" + raw_digest.hexdigest()
    assert disk_a["qcow2_size"] == first.qcow2.stat().st_size
    assert 0 < disk_a["qcow2_size"] < disk_a["raw_size"]


def test_the_disk_is_an_artifact_attached_to_its_image(flask_disks):
    baked = flask_disks[0]
    disk = baked.result["disk"]
    assert disk["reference"] == f"{baked.result['image']}-disk"
    index = json.loads((baked.store / "index.json").read_text())
    tagged = {entry["annotations"]["org.opencontainers.image.ref.name"]: entry for entry in index["manifests"]}
    assert tagged[disk["reference"]]["digest"] == disk["digest"]
    manifest = json.loads((baked.store / "blobs" / "sha256" / disk["digest"].split(":")[1]).read_bytes())
    assert manifest["artifactType"] == "application/vnd.imagebuild.disk.v1"
    assert manifest["subject"]["digest"] == baked.result["digest"]
    assert manifest["annotations"]["dev.imagebuild.disk.raw.digest"] == disk["raw_digest"]
    assert manifest["annotations"]["org.opencontainers.image.version"] == baked.result["version"]
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.imagebuild.disk.qcow2"
    blob = baked.store / "blobs" / "sha256" / layer["digest"].split(":")[1]
    assert blob.read_bytes() == baked.qcow2.read_bytes()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(baked.qcow2)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == disk["raw_size"]



def test_images_lists_the_disk_and_rm_of_its_image_untags_it(flask_disks):
    """On the second bake's store: only untags, and the other tests read that bake's files, not its store."""
    baked = flask_disks[1]
    image, disk = baked.result["image"], baked.result["disk"]["reference"]
    done = imagebuild("images", "--store", baked.store, "--json")
    assert done.returncode == 0, done.stderr
    kinds = {row["image"]: row["kind"] for row in json.loads(done.stdout)["images"]}
    assert (kinds[image], kinds[disk]) == ("image", "disk")
    listed = imagebuild("images", "--store", baked.store).stdout.splitlines()
    assert f"{disk}\t{baked.result['disk']['digest']}\tdisk" in listed
    refused = imagebuild("export", disk, f"oci:{baked.store.parent / 'disk-export'}", "--store", baked.store)
    assert refused.returncode == 2 and "not a container image" in refused.stderr

    done = imagebuild("rm", image, "--store", baked.store, "--json")
    assert done.returncode == 0, done.stderr
    removed = {row["ref"]: row["digest"] for row in json.loads(done.stdout)["removed"]}
    assert removed == {image: baked.result["digest"], disk: baked.result["disk"]["digest"]}
    refs = [entry["annotations"]["org.opencontainers.image.ref.name"]
            for entry in json.loads((baked.store / "index.json").read_text())["manifests"]]
    assert image not in refs and disk not in refs


def test_a_second_bake_reuses_the_disk(flask_disks):
    baked = flask_disks[0]
    repo = baked.store.parent / "flask-hello"
    done = bake(repo, baked.store, "--format", "disk", "--json")
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)["disk"]
    assert again["cached"] is True
    assert again["digest"] == baked.result["disk"]["digest"]


def test_disk_boot_answers_health_and_reports_the_kernel_command_line_environment(
        flask_disks, accelerator, tmp_path):
    disk = tmp_path / "test.qcow2"
    shutil.copyfile(flask_disks[0].qcow2, disk)
    done = imagebuild("disk", "set-env", disk, "test")
    assert done.returncode == 0, done.stderr
    config = tmp_path / "syslinux.cfg"
    assert "imagebuild.env=test" in boot_file(disk, "syslinux.cfg", config).read_text()

    port, console = free_port(), tmp_path / "console.log"
    command = [sys.executable, "-m", "imagebuild", "disk", "boot", str(disk), "--forward", f"{port}:{GUEST_PORT}",
               "--accel", accelerator]
    with _cli_booted(command, console) as process:
        seconds = wait_for_health(port, process, console)
        status, body = http_get(f"http://127.0.0.1:{port}/health")
        assert (status, body) == (200, b"ok\n")
        status, body = http_get(f"http://127.0.0.1:{port}/")
        assert status == 200
        answer = json.loads(body)
        assert (answer["environment"], answer["log_level"]) == ("test", "info")
    log = console.read_text(errors="replace")
    assert "imagebuild: environment test" in log
    assert f"digest={flask_disks[0].result['digest']}" in log     # the launcher's start-up line names the image
    assert "files=/run/imagebuild" in log         # the image's own /run/imagebuild, made again on the VM's /run
    assert "lease of" in log                      # the address came by DHCP
    print(f"boot to /health under {accelerator}: {seconds:.1f} s")


def test_the_disk_boots_by_uefi_too_and_stops_gracefully_on_the_power_button(flask_disks, accelerator, tmp_path):
    disk = tmp_path / "dev.raw"
    shutil.copyfile(flask_disks[0].raw, disk)
    done = imagebuild("disk", "set-env", disk, "dev")
    assert done.returncode == 0, done.stderr
    entry = boot_file(disk, "loader/entries/imagebuild.conf", tmp_path / "entry.conf").read_text()
    assert "imagebuild.env=dev" in entry
    port, console, qmp = free_port(), tmp_path / "console.log", tmp_path / "qmp.sock"
    with booted(qemu_command(disk, port, GUEST_PORT, accelerator, uefi=True, qmp=qmp), console) as process:
        seconds = wait_for_health(port, process, console)
        status, body = http_get(f"http://127.0.0.1:{port}/")
        assert status == 200
        answer = json.loads(body)
        assert (answer["environment"], answer["log_level"]) == ("dev", "debug")
        # a hypervisor's shut-down: the app is asked to stop (gunicorn exits cleanly), then the VM powers off
        press_power_button(qmp)
        process.wait(timeout=BOOT_BOUND_SECONDS)
    log = console.read_text(errors="replace")
    assert "SYSLINUX" not in log                     # it was systemd-boot that loaded the kernel
    assert "imagebuild: power button: stopping the app" in log
    assert "Shutting down: Master" in log
    assert "the app exited with status 0; powering off" in log
    print(f"UEFI boot to /health under {accelerator}: {seconds:.1f} s")


def test_a_config_drive_names_the_environment_and_gives_its_secrets(flask_disks, accelerator, tmp_path):
    drive = tmp_path / "config.img"
    done = imagebuild("disk", "config-drive", drive, "prod")
    assert done.returncode == 0, done.stderr
    # prod needs SECRET_KEY, which nobody gave: the launcher refuses, the app exits, the VM powers off,
    # and `disk boot` exits with the app's code and one line quoting the console's last lines
    done = subprocess.run([sys.executable, "-m", "imagebuild", "disk", "boot", str(flask_disks[0].raw),
                           "--forward", f"{free_port()}:{GUEST_PORT}", "--accel", accelerator,
                           "--config-drive", str(drive)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BOOT_BOUND_SECONDS)
    log = done.stdout
    assert "imagebuild: environment prod" in log
    assert "SECRET_KEY" in log
    assert "the app exited with status 64" in log
    assert done.returncode == 64, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the app exited with code 64 (last console lines: ") and "SECRET_KEY" in last

    secrets = tmp_path / "prod.env"
    secrets.write_text("# prod\nSECRET_KEY=s3cret value\n")
    done = imagebuild("disk", "config-drive", drive, "prod", "--vars", secrets)
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    port, console = free_port(), tmp_path / "console-with-secret.log"
    command = qemu_command(flask_disks[0].raw, port, GUEST_PORT, accelerator, config_drive=drive)
    with booted(command, console) as process:
        wait_for_health(port, process, console)
        status, body = http_get(f"http://127.0.0.1:{port}/")
        assert status == 200
        answer = json.loads(body)
        assert (answer["environment"], answer["log_level"], answer["new_checkout"]) == ("prod", "info", False)
    assert "s3cret" not in console.read_text(errors="replace")


def test_bad_disk_requests_are_one_line_user_errors(flask_disks, tmp_path):
    baked = flask_disks[0]
    bad_vars = tmp_path / "bad.env"
    bad_vars.write_text("SECRET_KEY=fine\nexport NOT-A-NAME=hidden-value\n")
    repo = baked.store.parent / "flask-hello"
    not_a_disk = tmp_path / "drive.img"          # a config drive: FAT, with a boot sector's 55 AA, but no partitions
    assert imagebuild("disk", "config-drive", not_a_disk, "test").returncode == 0
    cases = [
        bake(repo, baked.store, "--format", "disk", "-o", f"disk:{tmp_path}/x.vmdk"),
        bake(repo, baked.store, "-o", f"disk:{tmp_path}/x.qcow2"),
        bake(repo, baked.store, "--format", "floppy"),
        imagebuild("disk", "set-env", tmp_path / "missing.qcow2", "test"),
        imagebuild("disk", "set-env", baked.qcow2, "no good"),
        imagebuild("disk", "write", baked.result["image"], tmp_path / "x.qcow2", "--store", baked.store),
        imagebuild("disk", "config-drive", tmp_path / "c.img", "prod", "--vars", bad_vars),
        imagebuild("disk", "config-drive", tmp_path / "c.img", "prod", "--vars", tmp_path / "absent.env"),
        imagebuild("disk", "boot", baked.qcow2, "--accel", "hvf"),
        imagebuild("disk", "boot", baked.qcow2, "--forward", "8080"),
        imagebuild("disk", "boot", tmp_path / "missing.qcow2"),
        imagebuild("disk", "set-env", not_a_disk, "test"),
        imagebuild("disk", "boot", not_a_disk),
    ]
    for done in cases:
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert "hidden-value" not in done.stderr
    assert not (tmp_path / "x.qcow2").exists()
    assert not (tmp_path / "c.img").exists()


def test_promoting_in_the_local_store_carries_the_disk(flask_disks):
    baked = flask_disks[0]
    repo = baked.store.parent / "flask-hello"
    done = imagebuild("promote", baked.result["version"], "--to", "dev", "--recipe", repo / "imagebuild.yaml",
                      "--store", baked.store)
    assert done.returncode == 0, done.stderr
    assert "carry its disk" in done.stdout
    refs = {entry["annotations"]["org.opencontainers.image.ref.name"]: entry["digest"]
            for entry in json.loads((baked.store / "index.json").read_text())["manifests"]}
    assert refs["flask-hello:dev"] == baked.result["digest"]
    assert refs["flask-hello:dev-disk"] == baked.result["disk"]["digest"]


def _partition(raw: Path, number: int, out: Path) -> Path:
    with open(raw, "rb") as disk:
        mbr = disk.read(512)
        start, size = struct.unpack_from("<II", mbr, 446 + 16 * (number - 1) + 8)
        disk.seek(start * 512)
        with open(out, "wb") as target:
            left = size * 512
            while left:
                chunk = disk.read(min(left, 1 << 22))
                target.write(chunk)
                left -= len(chunk)
    return out


def _tree(root: Path, modes: dict[str, tuple[int, int, int]] | None = None) -> dict[str, tuple]:
    """path -> (mode, uid, gid, sha256 or link target, mtime of non-directories)."""
    out = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        relative = str(path.relative_to(root))
        if stat.S_ISREG(info.st_mode):
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            what = os.readlink(path)
        else:
            what = ""
        mode, uid, gid = modes[relative] if modes is not None else (info.st_mode, info.st_uid, info.st_gid)
        mtime = 0 if stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode) else int(info.st_mtime)
        out[relative] = (mode, uid, gid, what, mtime)
    return out


def _ext2_modes(image: Path, directories: list[str]) -> dict[str, tuple[int, int, int]]:
    """Mode (with setuid/setgid/sticky bits), uid and gid of every entry, as the ext2 file system holds them."""
    script = image.parent / "ls.debugfs"
    script.write_text("".join(f'ls -p "/{directory}"\n' for directory in directories))
    done = subprocess.run(["debugfs", "-f", str(script), str(image)], capture_output=True, text=True, check=True)
    modes, current = {}, ""
    for line in done.stdout.splitlines():
        if line.startswith("debugfs:"):
            current = line.split('"')[1].strip("/")
            continue
        fields = line.split("/")
        if len(fields) >= 6 and fields[5] not in (".", "..", "lost+found"):
            relative = f"{current}/{fields[5]}".strip("/")
            modes[relative] = (int(fields[2], 8), int(fields[3]), int(fields[4]))
    return modes


def test_the_root_file_system_holds_exactly_the_image_files(flask_disks, tmp_path):
    """umoci's unpacking of the image and the disk's ext2 hold the same paths, bytes, modes, owners, times."""
    baked = flask_disks[0]
    bundle = tmp_path / "bundle"
    done = subprocess.run(["umoci", "unpack", "--image", f"{baked.store}:{baked.result['image']}", str(bundle)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    image_tree = _tree(bundle / "rootfs")

    root = _partition(baked.raw, 2, tmp_path / "root.ext2")
    dumped = tmp_path / "disk"
    dumped.mkdir()
    done = subprocess.run(["debugfs", "-R", f"rdump / {dumped}", str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    directories = [""] + [str(path.relative_to(dumped)) for path in dumped.rglob("*")
                          if path.is_dir() and not path.is_symlink()]
    disk_tree = _tree(dumped, _ext2_modes(root, directories))
    assert set(disk_tree) == set(image_tree)
    assert [path for path in image_tree if disk_tree[path] != image_tree[path]] == []
    assert len(image_tree) > 1000


@pytest.mark.parametrize("example, guest_port", [("static-site", 8080), ("fastapi-hello", 8000), ("java-hello", 8080)])
def test_every_stock_recipes_example_serves_from_its_disk(example, guest_port, example_disk, accelerator, tmp_path):
    """nginx, uvicorn and java as the Flask example's gunicorn above: booted without an environment (each
    example's detection defaults to dev), its health path answering through the forwarded port. nginx
    reopens /dev/stdout for its access log as the app's user, which a root-owned console would refuse."""
    baked = example_disk(example)
    port, console = free_port(), tmp_path / "console.log"
    command = [sys.executable, "-m", "imagebuild", "disk", "boot", str(baked.qcow2),
               "--forward", f"{port}:{guest_port}", "--accel", accelerator]
    with _cli_booted(command, console) as process:
        seconds = wait_for_health(port, process, console)
        status, body = http_get(f"http://127.0.0.1:{port}/")
        assert status == 200, body
    log = console.read_text(errors="replace")
    assert "environment=dev" in log and "files=/run/imagebuild" in log
    print(f"{example}: boot to /health under {accelerator}: {seconds:.1f} s")


def test_a_disk_past_disk_max_size_is_refused_in_one_line_and_nothing_is_written(tmp_path, tmp_path_factory):
    base = base_for("flask-hello", tmp_path_factory)

    def small_bound(repo: Path):
        recipe = repo / "imagebuild.yaml"
        recipe.write_text(recipe.read_text() + "disk:\n  max_size: 8MiB\n")

    repo = example_repo(tmp_path, "flask-hello", lock=base.lock_path, prepare=small_bound)
    store = seed(tmp_path / "store", base)
    out = tmp_path / "flask.qcow2"
    done = bake(repo, store.root, "--format", "disk", "-o", f"disk:{out}")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the image's layers expand to more than disk.max_size (8 MiB)"), done.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert not out.exists()
    refs = [entry["annotations"]["org.opencontainers.image.ref.name"]
            for entry in json.loads((store.root / "index.json").read_text())["manifests"]]
    assert not [ref for ref in refs if ref.endswith("-disk")]
