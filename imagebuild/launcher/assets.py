"""The launcher's own files, as shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from imagebuild.contract import RUNTIME_MODULE


def launcher_script() -> bytes:
    return _read("launch.sh")


def runtime_module() -> bytes:
    """The source of `imagebuild_runtime`, shipped into Python images."""
    return _read(f"{RUNTIME_MODULE}.py")


def _read(name: str) -> bytes:
    """A file beside this module; through importlib.resources (~10 ms to import its readers) only when
    the package is not plain files, e.g. inside a zip."""
    try:
        return Path(__file__).with_name(name).read_bytes()
    except OSError:
        from importlib import resources

        return resources.files(__package__).joinpath(name).read_bytes()
