"""The launcher's own files, as shipped inside the package."""

from __future__ import annotations

from importlib import resources

from imagebuild.contract import RUNTIME_MODULE


def launcher_script() -> bytes:
    return resources.files(__package__).joinpath("launch.sh").read_bytes()


def runtime_module() -> bytes:
    """The source of `imagebuild_runtime`, shipped into Python images."""
    return resources.files(__package__).joinpath(f"{RUNTIME_MODULE}.py").read_bytes()
