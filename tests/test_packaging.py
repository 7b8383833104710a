"""A non-editable install carries what the checkout finds beside the package:
the stock recipes (recipes/) and the launcher script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run

STOCK = sorted(p.parent.name for p in (REPO_ROOT / "recipes").glob("*/imagebuild.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy of the files git would ship, so the shared checkout gets no build/.
    source = tmp_path_factory.mktemp("source")
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        origin = REPO_ROOT / name
        if origin.is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                 "-w", str(out), str(source)])
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("imagebuild-*.whl")
    return found


def test_wheel_holds_every_package_the_stock_recipes_and_the_launcher(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (REPO_ROOT / "imagebuild").rglob("__init__.py"):
        assert init.relative_to(REPO_ROOT).as_posix() in names, f"{init} is not packaged (pyproject.toml packages)"
    assert "imagebuild/launcher/launch.sh" in names
    assert STOCK, "the checkout has no stock recipes"
    for recipe in (REPO_ROOT / "recipes").rglob("*"):
        if recipe.is_file() and "__pycache__" not in recipe.parts:
            packaged = "imagebuild/stock_recipes/" + recipe.relative_to(REPO_ROOT / "recipes").as_posix()
            assert packaged in names, f"{recipe} is not in the wheel"


def test_installed_tool_finds_stock_recipes_and_launcher(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    installed = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    # The dependencies come from the test's own environment, appended after the install's site-packages.
    target_site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(target_site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    probe = run([str(python), "-c",
                 "import imagebuild, imagebuild.launcher.assets as l, imagebuild.recipe.loader as r;"
                 "print(imagebuild.__file__); print(','.join(r.stock_recipe_names()));"
                 "print(len(l.launcher_script()))"],
                env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    where, names, launcher_size = probe.stdout.split()
    assert where.startswith(str(env_dir)), where
    assert names.split(",") == STOCK
    assert int(launcher_size) == (REPO_ROOT / "imagebuild" / "launcher" / "launch.sh").stat().st_size

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>hello</h1>\n")
    init = subprocess.run([str(env_dir / "bin" / "imagebuild"), "init", str(site)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert init.returncode == 0, init.stderr
    assert "extends static-nginx" in init.stderr
    assert (site / "imagebuild.yaml").is_file()


def test_the_cli_starts_without_the_libraries_only_some_commands_need():
    # Every invocation loads every command module; the heavy libraries load when a command runs.
    heavy = ["httpx", "jinja2", "docker", "yaml", "zstandard", "imagebuild.stores.layout", "imagebuild.build.bake"]
    probe = ("import sys, imagebuild.cli.main, imagebuild.cli.app; "
             f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    loaded = run([sys.executable, "-c", probe])
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == []
