"""Naming the environment a disk boots into, without rebuilding it.

Two ways, both read by the initramfs (the kernel command line wins):
- the kernel command line: `set_environment` rewrites the boot loaders'
  configuration in place (mtools on the disk file, no mount), appending
  `imagebuild.env=NAME`; a qcow2 disk goes through raw and back;
- a config drive: `config_drive` writes a small FAT image labelled IMAGEBUILD
  holding a file `env`, to attach as a second disk; its optional file `vars`
  (NAME=VALUE lines) gives the app more variables, such as the secrets an
  environment requires.
Both give the same bytes for the same disk and name.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from imagebuild.build.disk import assemble
from imagebuild.build.disk.build import BASE_CMDLINE, boot_configs
from imagebuild.build.disk.initramfs import CONFIG_LABEL
from imagebuild.errors import UserError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(environment: str) -> str:
    if not _NAME.match(environment):
        raise UserError(f"{environment!r} is not an environment name",
                        hint="use letters, digits, '.', '_' and '-', as in the recipe's environments")
    return environment


def set_environment(disk: Path, environment: str | None) -> None:
    """Make DISK boot into ENVIRONMENT (None: back to detection)."""
    if environment is not None:
        check_name(environment)
    if not disk.is_file():
        raise UserError(f"{disk} is not a file", hint="give the path of a disk made by `bake --format disk`")
    cmdline = BASE_CMDLINE + (f" imagebuild.env={environment}" if environment else "")
    if assemble.disk_format(disk) == "qcow2":
        with tempfile.TemporaryDirectory(prefix="imagebuild-disk-", dir=disk.parent) as scratch:
            raw = Path(scratch) / "disk.raw"
            assemble.to_raw(disk, raw)
            _write_cfg(raw, cmdline, Path(scratch))
            assemble.to_qcow2(raw, Path(scratch) / "disk.qcow2")
            (Path(scratch) / "disk.qcow2").replace(disk)
        return
    with tempfile.TemporaryDirectory(prefix="imagebuild-disk-") as scratch:
        _write_cfg(disk, cmdline, Path(scratch))


def _write_cfg(raw: Path, cmdline: str, scratch: Path) -> None:
    offset = assemble.boot_partition_offset(raw)
    for number, (name, data) in enumerate(sorted(boot_configs(cmdline).items())):
        staged = scratch / f"config-{number}"
        staged.write_bytes(data)
        assemble.run_tool("mcopy", "-o", "-i", f"{raw}@@{offset}", str(staged), f"::{name}",
                          env=assemble.mtools_env(0), failure=f"cannot rewrite the boot configuration of {raw}")


def read_vars(path: Path) -> str:
    """A file of NAME=VALUE lines (blank lines and # comments allowed), checked; its values are never shown."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, equals, _ = line.partition("=")
        if not equals or not _VAR.match(name):
            raise UserError(f"{path}:{number} is not NAME=VALUE",
                            hint="one variable a line, NAME of letters, digits and '_'")
        lines.append(line)
    return "".join(f"{line}\n" for line in lines)


def config_drive(path: Path, environment: str, variables: str = "") -> None:
    """A 1 MiB FAT image labelled IMAGEBUILD: `env` names the environment, `vars` (if any) holds NAME=VALUE lines."""
    check_name(environment)
    if not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a directory", hint="create it or write the config drive elsewhere")
    with tempfile.TemporaryDirectory(prefix=".imagebuild-config-", dir=path.parent) as scratch:
        image = Path(scratch) / "config.img"
        assemble.run_tool("mkfs.fat", "-C", "--invariant", "-i", "1b5e0000", "-n", CONFIG_LABEL, str(image), "1024",
                          failure="cannot write the config drive")
        files = {"env": environment + "\n", **({"vars": variables} if variables else {})}
        for name, text in files.items():
            (Path(scratch) / name).write_text(text)
            assemble.run_tool("mcopy", "-i", str(image), str(Path(scratch) / name), f"::{name}",
                              env=assemble.mtools_env(0), failure="cannot write the config drive")
        image.chmod(0o600 if variables else 0o644)
        image.replace(path)
