"""Booting a disk under qemu-system-x86_64: user-mode networking, the app's port forwarded to loopback.

KVM is used when it can run a guest, which an openable /dev/kvm does not prove
(nested hypervisors may refuse real-mode boot code or hang the kernel part way):
the probe boots the disk's own kernel without a root file system and waits until
it has run its whole start-up, to the panic for the missing root. Otherwise qemu
emulates the CPU (TCG), several times slower.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from imagebuild.build.disk import assemble
from imagebuild.build.disk.start import EXIT_MARKER
from imagebuild.errors import BuildError

QEMU = "qemu-system-x86_64"
OVMF = Path("/usr/share/qemu/OVMF.fd")      # UEFI firmware for qemu (Debian package ovmf)
PROBE_SECONDS = 20.0     # a working KVM gets the kernel to its root-less panic in a few seconds
PROBE_END = b"Kernel panic"
CONSOLE_TAIL = 3         # console lines an app's failure quotes


def boot_file(disk: Path, name: str, out: Path) -> Path:
    """Copy a file (vmlinuz, initrd.img, syslinux.cfg) out of a disk's boot partition."""
    with tempfile.TemporaryDirectory(prefix="imagebuild-disk-") as scratch:
        raw = disk
        if assemble.disk_format(disk) == "qcow2":
            raw = Path(scratch) / "disk.raw"
            assemble.to_raw(disk, raw)
        offset = assemble.boot_partition_offset(raw)
        assemble.run_tool("mcopy", "-n", "-i", f"{raw}@@{offset}", f"::{name}", str(out),
                          failure=f"cannot read {name} from {disk}")
    return out


def kvm_usable(kernel: Path) -> bool:
    """Whether KVM runs KERNEL through its start-up (to the panic for want of a root file system)."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    process = subprocess.Popen([QEMU, "-accel", "kvm", "-m", "256", "-display", "none", "-no-reboot", "-nodefaults",
                                "-serial", "stdio", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + PROBE_SECONDS
            while time.monotonic() < deadline and PROBE_END not in seen:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
    finally:
        process.kill()
        process.wait()
    return PROBE_END in seen


def qemu_command(disk: Path, port: int, guest_port: int, accelerator: str, *, config_drive: Path | None = None,
                 memory_mb: int = 1024, snapshot: bool = True, uefi: bool = False,
                 qmp: Path | None = None, console_log: Path | None = None) -> list[str]:
    """The command line that boots DISK with 127.0.0.1:PORT forwarded to the guest's GUEST_PORT,
    by BIOS (SYSLINUX) or, with UEFI, by OVMF (systemd-boot); QMP, when asked for, listens on a unix socket.
    The serial console is qemu's stdio, and with CONSOLE_LOG also copied to that file."""
    firmware: list[str] = []
    if uefi:
        if not OVMF.is_file():
            raise BuildError(f"UEFI boot needs {OVMF} (Debian package ovmf)")
        firmware = ["-bios", str(OVMF)]
    command = [QEMU, "-accel", accelerator, *firmware, "-m", str(memory_mb), "-smp", "2", "-display", "none",
               "-no-reboot", "-monitor", "none",
               "-drive", f"file={disk},format={assemble.disk_format(disk)},if=virtio",
               "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:{guest_port}",
               "-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci"]
    if console_log is None:
        command += ["-serial", "stdio"]
    else:
        logfile = str(console_log).replace(",", ",,")            # a comma ends a qemu option value
        command += ["-chardev", f"stdio,id=console,signal=on,logfile={logfile}", "-serial", "chardev:console"]
    if snapshot:
        command.append("-snapshot")        # the guest's writes go to a temp file: the disk stays as built
    if config_drive is not None:
        command += ["-drive", f"file={config_drive},format=raw,if=virtio,readonly=on"]
    if qmp is not None:
        command += ["-qmp", f"unix:{qmp},server=on,wait=off"]     # QMP: e.g. system_powerdown, the ACPI button
    return command


def press_power_button(qmp: Path) -> None:
    """What a hypervisor's "shut down" does: the ACPI power button, through qemu's QMP socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(str(qmp))
        stream = connection.makefile("rw")
        stream.readline()                                        # the greeting
        for command in ("qmp_capabilities", "system_powerdown"):
            stream.write(json.dumps({"execute": command}) + "\n")
            stream.flush()
            while "return" not in json.loads(stream.readline() or '{"return": null}'):
                pass                                             # events may come first


def app_exit(console: str) -> int | None:
    """The app's exit status, from the start script's last line on the serial console (None: it never said)."""
    found = re.findall(rf"^{re.escape(EXIT_MARKER)} (\d+);", console, flags=re.MULTILINE)
    return int(found[-1]) if found else None


class AppFailed(BuildError):
    """The app in the VM exited with an error: its exit code becomes the command's, as with `imagebuild run`."""

    def __init__(self, status: int, last: str):
        super().__init__(f"the app exited with code {status}", hint=f"last console lines: {last}")
        self.exit_code = status


def check_app_exit(console: str) -> None:
    """AppFailed when the console shows that the app failed; a BuildError when the VM stopped before the app
    did (a boot failure: no root file system, a kernel panic). Either quotes the console's last lines."""
    status = app_exit(console)
    if status == 0:
        return
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.replace("\r", ""))      # firmware's terminal codes
    if status is not None:
        plain = plain[:plain.rindex(EXIT_MARKER)]             # what the app said, not the power-off after it
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    last = " | ".join(lines[-CONSOLE_TAIL:]) or "nothing"
    if status is None:
        raise BuildError("the VM stopped before its app exited", hint=f"last console lines: {last}")
    raise AppFailed(status, last)


@contextlib.contextmanager
def booted(command: list[str], console: Path) -> Iterator[subprocess.Popen]:
    """Run qemu with its serial console going to CONSOLE; stop it on the way out."""
    with open(console, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
