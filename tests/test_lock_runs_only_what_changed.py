"""`imagebuild lock` starts only the processes its change needs: none when nothing changed, pip
alone when a requirement changed. Each run is a real `imagebuild lock` process whose children
tests/process_recorder.py writes down (how fast it is: bench/lock.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagebuild.sources.lockfile import LOCK_NAME, read_lock, write_lock
from tests.bake_support import EXAMPLES

REPO = Path(__file__).resolve().parent.parent
DEBIAN_TOOLS = {"apt-get", "apt-cache", "mmdebstrap", "dpkg"}
# werkzeug 3.1.8, the release before the example's, with its wheel's hash: one requirement bumped
OLD_WERKZEUG = "werkzeug==3.1.8 --hash=sha256:63a77fb8892bf28ebc3178683445222aa500e48ebad5ec77b0ad80f8726b1f50"


@pytest.fixture
def app(tmp_path):
    target = tmp_path / "flask-hello"
    shutil.copytree(EXAMPLES / "flask-hello", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def recorded_lock(app: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    record = tmp_path / "record.json"
    done = subprocess.run([sys.executable, "-m", "tests.process_recorder", str(record), "lock", *args, str(app)],
                          capture_output=True, text=True, cwd=REPO)
    return done, json.loads(record.read_text())


def test_the_recorder_sees_every_process_started(tmp_path):
    """The recorder itself can fail the tests below: a process started is written down, and timed."""
    record = tmp_path / "record.json"
    done = subprocess.run([sys.executable, "-m", "tests.process_recorder", str(record), "-c",
                           "import subprocess, sys; subprocess.run(['true']);"
                           "subprocess.run([sys.executable, '-m', 'json.tool', '--help'], capture_output=True)"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    written = json.loads(record.read_text())
    assert [started[0] for started in written["started"]] == ["true", "json.tool"]
    assert [name for name, _ in written["timed"]] == ["true", "json.tool"]


def test_nothing_changed_starts_no_process_at_all(app, tmp_path):
    lock = app / LOCK_NAME
    before = lock.read_bytes()
    done, record = recorded_lock(app, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "nothing resolved" in done.stdout
    assert record["started"] == []
    assert lock.read_bytes() == before


def test_check_with_nothing_changed_starts_no_process_either(app, tmp_path):
    done, record = recorded_lock(app, tmp_path, "--check")
    assert done.returncode == 0, done.stderr
    assert record["started"] == []


def test_check_names_a_lock_without_package_records_and_starts_nothing(app, tmp_path):
    """A lock made before locks kept dpkg's records fits the recipe, yet its bakes' SBOMs would read
    the base layers (downloading them when the registry lent them): `--check` fails on it."""
    from dataclasses import replace

    lock = read_lock(app / LOCK_NAME)
    assert lock.packages and lock.os_release      # the example's committed lock has its records
    write_lock(app / LOCK_NAME, replace(lock, packages={}, os_release={}))
    before = (app / LOCK_NAME).read_bytes()
    done, record = recorded_lock(app, tmp_path, "--check")
    assert done.returncode == 2 and record["started"] == []
    assert done.stderr == (f"error: {app / LOCK_NAME} has no package records: the SBOM of a bake that borrows its "
                           f"base layers from the registry would download them (run `imagebuild lock` and commit it)\n")
    assert (app / LOCK_NAME).read_bytes() == before


@pytest.mark.integration
def test_records_for_a_pin_the_mirror_dropped_name_it_and_the_upgrade(app, tmp_path):
    """Adding the records keeps every pin, so a pinned version gone from the mirror cannot be filled
    in: one line naming it and `lock --upgrade`, found from the index before any tree is built."""
    from dataclasses import replace

    lock = read_lock(app / LOCK_NAME)
    write_lock(app / LOCK_NAME, replace(lock, packages={}, os_release={},
                                        os={**lock.os, "libc6": "2.36-9+deb12u0bogus"}))
    before = (app / LOCK_NAME).read_bytes()
    done, record = recorded_lock(app, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == ("error: locked package libc6=2.36-9+deb12u0bogus is no longer on the "
                                            "mirror; run `imagebuild lock --upgrade` to refresh imagebuild.lock")
    assert "mmdebstrap" not in {started[0] for started in record["started"]}
    assert (app / LOCK_NAME).read_bytes() == before


@pytest.mark.integration
def test_a_changed_requirement_runs_pip_once_and_no_debian_tool(app, tmp_path):
    """pip's resolver through the package index; the Debian pins are kept byte for byte."""
    requirements = app / "requirements.txt"
    lines = requirements.read_text().replace(" \\\n    --hash", " --hash").splitlines()
    requirements.write_text("\n".join(OLD_WERKZEUG if line.startswith("werkzeug==") else line
                                      for line in lines) + "\n")
    before = read_lock(app / LOCK_NAME)
    done, record = recorded_lock(app, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [started[0] for started in record["started"]] == ["pip"]
    assert not DEBIAN_TOOLS & {started[0] for started in record["started"]}
    after = read_lock(app / LOCK_NAME)
    assert after.os == before.os and after.runtime == before.runtime and after.packages == before.packages
    assert {package.name: package.version for package in after.python.packages}["werkzeug"] == "3.1.8"
    # and the lock it wrote is fresh: a second run starts nothing
    again, record = recorded_lock(app, tmp_path)
    assert again.returncode == 0 and record["started"] == []


@pytest.mark.integration
def test_two_platforms_resolve_their_closures_side_by_side_and_nothing_else(tmp_path):
    """Each architecture's closure from pip (its own wheels), both pip runs at once; Debian pins kept."""
    from tests.test_platforms import _two_platform_app, _with_arm64_part

    app = _two_platform_app(tmp_path)
    _with_arm64_part(app)
    (app / "requirements.txt").write_text("flask==3.1.3\nwerkzeug==3.1.8\n")     # unhashed: one file, two platforms
    done, record = recorded_lock(app, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [started[0] for started in record["started"]] == ["pip", "pip"]
    lock = read_lock(app / LOCK_NAME)
    wheels = {architecture: {package.name: package.wheel for package in lock.for_architecture(architecture).python.packages}
              for architecture in ("amd64", "arm64")}
    assert "x86_64" in wheels["amd64"]["markupsafe"] and "aarch64" in wheels["arm64"]["markupsafe"]


def test_check_covers_a_java_app_through_its_runtime_pins(tmp_path):
    """A Java app's jars come from its build, not from imagebuild.lock; the JRE is a Debian package,
    so a changed runtime.java is what `--check` finds stale, without starting anything."""
    app = tmp_path / "java-hello"
    shutil.copytree(EXAMPLES / "java-hello", app)
    done, record = recorded_lock(app, tmp_path, "--check")
    assert done.returncode == 0 and record["started"] == [], done.stderr
    recipe = app / "imagebuild.yaml"
    recipe.write_text(recipe.read_text() + 'runtime:\n  java: "21"\n')
    done, record = recorded_lock(app, tmp_path, "--check")
    assert done.returncode == 2 and record["started"] == []
    assert done.stderr.strip().endswith("is out of date with the Debian inputs (os/runtime sections) "
                                        "(run `imagebuild lock` and commit it)"), done.stderr
