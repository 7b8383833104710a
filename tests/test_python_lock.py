"""imagebuild.lock's Python closure: written by `imagebuild lock` from pip's resolver, checked by
`lock --check`, and an old lock without it still read."""

from __future__ import annotations

import json
import shutil

import pytest

from imagebuild.sources.lockfile import LOCK_FORMAT, LOCK_NAME, dumps, parse_lock, read_lock
from tests.bake_support import EXAMPLES
from tests.conftest import imagebuild
from tests.test_export_errors import assert_one_line_error


@pytest.fixture
def app(tmp_path):
    """examples/flask-hello with its committed (fresh) lock."""
    target = tmp_path / "flask-hello"
    shutil.copytree(EXAMPLES / "flask-hello", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _format_1(lock_text: str) -> str:
    data = json.loads(lock_text)
    data.pop("python", None)
    data["format"] = 1
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_the_example_locks_hold_the_full_closure_with_hashes():
    lock = read_lock(EXAMPLES / "flask-hello" / LOCK_NAME)
    assert lock is not None and lock.python is not None
    packages = {package.name: package for package in lock.python.packages}
    # flask's own dependencies, and theirs (jinja2 -> markupsafe), each pinned to one wheel
    assert {"flask", "werkzeug", "jinja2", "markupsafe", "click", "itsdangerous", "blinker"} <= set(packages)
    for package in packages.values():
        assert len(package.sha256) == 64 and package.wheel.endswith(".whl") and package.version
    assert b"markupsafe==" in lock.python.requirements() and b"--hash=sha256:" in lock.python.requirements()


def test_a_format_1_lock_still_reads(app):
    text = _format_1((app / LOCK_NAME).read_text())
    lock = parse_lock(text, app / LOCK_NAME)
    assert lock.python is None and lock.os
    # written back as format 1 (nothing of format 2 in it), so older readers keep reading it
    assert json.loads(dumps(lock))["format"] == 1 and dumps(lock) == text
    assert LOCK_FORMAT == 2 and json.loads((app / LOCK_NAME).read_text())["format"] == 2


def test_check_is_quiet_and_writes_nothing_when_fresh(app):
    before = (app / LOCK_NAME).read_bytes()
    done = imagebuild("lock", "--check", app)
    assert done.returncode == 0, done.stderr
    assert (app / LOCK_NAME).read_bytes() == before


def test_check_names_changed_requirements(app):
    before = (app / LOCK_NAME).read_bytes()
    with (app / "requirements.txt").open("a") as handle:
        handle.write("\n# a comment changes the file\n")
    line = assert_one_line_error(imagebuild("lock", "--check", app), "Python requirements", "imagebuild lock")
    assert "Debian" not in line
    assert (app / LOCK_NAME).read_bytes() == before


def test_check_names_changed_debian_inputs(app):
    recipe = app / "imagebuild.yaml"
    recipe.write_text(recipe.read_text().replace("packages: [ca-certificates]", "packages: [ca-certificates, curl]"))
    line = assert_one_line_error(imagebuild("lock", "--check", app), "Debian inputs", "imagebuild lock")
    assert "Python" not in line


def test_check_names_a_lock_without_the_closure(app):
    (app / LOCK_NAME).write_text(_format_1((app / LOCK_NAME).read_text()))
    assert_one_line_error(imagebuild("lock", "--check", app), "Python requirements")


def test_lock_with_nothing_changed_rewrites_nothing(app):
    lock = app / LOCK_NAME
    before, mtime = lock.read_bytes(), lock.stat().st_mtime_ns
    done = imagebuild("lock", app)     # how fast: bench/, not a test that a busy machine could fail
    assert done.returncode == 0, done.stderr
    assert "nothing resolved" in done.stdout
    assert lock.read_bytes() == before and lock.stat().st_mtime_ns == mtime


@pytest.mark.integration
def test_lock_re_resolves_only_the_closure_when_requirements_change(app):
    """pip's resolver, through the package index: a new top-level pin brings its dependencies,
    hashed; the Debian pins stay exactly as they were."""
    lock_path = app / LOCK_NAME
    before = read_lock(lock_path)
    (app / "requirements.txt").write_text("flask==3.1.3\n")     # unhashed, only the top
    done = imagebuild("lock", "--json", app)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resolved"] == ["python"]
    after = read_lock(lock_path)
    assert after.os == before.os and after.runtime == before.runtime and after.inputs == before.inputs
    names = {package.name for package in after.python.packages}
    assert {"flask", "werkzeug", "jinja2", "markupsafe"} <= names
    assert all(len(package.sha256) == 64 for package in after.python.packages)
    assert imagebuild("lock", "--check", app).returncode == 0
