"""`imagebuild disk ...`: name the environment a baked disk boots into, write a stored disk out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import PLAIN, StoreOption, open_store, say

disk_app = typer.Typer(no_args_is_help=True, help="Bootable disks made by `bake --format disk`.", **PLAIN)


@disk_app.command("set-env")
def set_env(disk: Path = typer.Argument(..., help="A disk file (.qcow2 or .raw) made by `bake --format disk`."),
            environment: Optional[str] = typer.Argument(None, help="The environment; leave out to let the "
                                                                   "launcher detect it.")) -> None:
    """Put imagebuild.env=ENVIRONMENT on the disk's kernel command line, in place."""
    from imagebuild.release.disk.environment import set_environment
    set_environment(disk, environment)
    say(f"{disk} boots into {environment}" if environment else f"{disk} boots with environment detection")


@disk_app.command("config-drive")
def config_drive(path: Path = typer.Argument(..., help="The image file to write (FAT, 1 MiB)."),
                 environment: str = typer.Argument(..., help="The environment the VM boots into."),
                 variables: Optional[Path] = typer.Option(
                     None, "--vars", help="A file of NAME=VALUE lines (e.g. the environment's secrets) the app gets "
                                          "as environment variables.")) -> None:
    """Write a config drive naming the environment, to attach to the VM as a second disk."""
    from imagebuild.release.disk.environment import config_drive as write, read_vars
    write(path, environment, read_vars(variables) if variables else "")
    say(f"{path}: config drive for {environment}")


@disk_app.command("write")
def write(reference: str = typer.Argument(..., help="NAME:VERSION-disk in the local store."),
          path: Path = typer.Argument(..., help="FILE.qcow2 or FILE.raw"),
          store: Optional[Path] = StoreOption) -> None:
    """Write a disk from the local store to a file."""
    from imagebuild.build.disk.artifact import check_disk_output, write_disk
    write_disk(open_store(store), reference, check_disk_output(f"disk:{path}"))
    say(f"wrote {path}")


@disk_app.command("boot")
def boot(disk: Path = typer.Argument(..., help="A disk file (.qcow2 or .raw) made by `bake --format disk`."),
         forward: str = typer.Option("8080:8000", "--forward",
                                     help="HOST_PORT:GUEST_PORT, the host side on 127.0.0.1."),
         config: Optional[Path] = typer.Option(None, "--config-drive", help="A config drive to attach."),
         memory: int = typer.Option(1024, "--memory", help="MiB of memory for the VM."),
         uefi: bool = typer.Option(False, "--uefi", help="Boot by UEFI (OVMF, systemd-boot) instead of BIOS."),
         accel: Optional[str] = typer.Option(None, "--accel",
                                             help="kvm or tcg (default: kvm when it can run the guest here)")) -> None:
    """Boot a disk under qemu on this machine (KVM when it can run the guest, else emulation); the guest's
    writes are thrown away. The serial console is this terminal; Ctrl-C stops the VM. When the app exits
    with an error, so does this command, with the app's exit code."""
    import subprocess
    import tempfile

    from imagebuild.release.disk.qemu import boot_file, check_app_exit, kvm_usable, qemu_command
    from imagebuild.errors import UserError
    host, _, guest = forward.partition(":")
    if not (host.isdigit() and guest.isdigit() and 0 < int(host) < 65536 and 0 < int(guest) < 65536):
        raise UserError(f"--forward {forward!r} is not HOST_PORT:GUEST_PORT", hint="e.g. --forward 8080:8000")
    for path in (disk, config):
        if path is not None and not path.is_file():
            raise UserError(f"{path} is not a file")
    if accel not in (None, "kvm", "tcg"):
        raise UserError(f"--accel {accel!r} is neither kvm nor tcg")
    accelerator = accel
    if accelerator is None:
        with tempfile.TemporaryDirectory(prefix="imagebuild-boot-") as scratch:
            accelerator = "kvm" if kvm_usable(boot_file(disk, "vmlinuz", Path(scratch) / "vmlinuz")) else "tcg"
    say(f"booting {disk} ({accelerator}, {'UEFI' if uefi else 'BIOS'}); http://127.0.0.1:{host}/ reaches the guest's port {guest}")
    with tempfile.TemporaryDirectory(prefix="imagebuild-boot-") as scratch:
        console = Path(scratch) / "console.log"      # a copy of the console: the app's exit status is on it
        try:
            subprocess.run(qemu_command(disk, int(host), int(guest), accelerator, config_drive=config,
                                        memory_mb=memory, uefi=uefi, console_log=console))
        except KeyboardInterrupt:
            return                                   # stopped here, not by the app
        check_app_exit(console.read_text(errors="replace") if console.exists() else "")
