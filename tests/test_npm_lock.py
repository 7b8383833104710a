"""package-lock.json as the pin of a Node image's libraries: what it must hold, how the recipe
names it, and `imagebuild lock --check` on it. No network, no npm."""

from __future__ import annotations

import json
import shutil

import pytest

from imagebuild.errors import RecipeError, UserError
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.templates import server_command
from imagebuild.plan import Commit, image_settings
from imagebuild.sources.npm_lock import checked_npm_lock, parse_npm_lock, stale_dependencies
from tests.bake_support import EXAMPLES
from tests.conftest import imagebuild

INTEGRITY = "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA=="


def lock_bytes(packages: dict, version: int = 3, root_deps: dict | None = None) -> bytes:
    root = {"name": "app", "version": "1.0.0", "dependencies": root_deps if root_deps is not None else {"ms": "2.1.3"}}
    return json.dumps({"name": "app", "lockfileVersion": version, "packages": {"": root, **packages}}).encode()


def test_a_lock_pins_every_installed_package_and_is_keyed_by_its_bytes():
    data = lock_bytes({"node_modules/ms": {"version": "2.1.3", "integrity": INTEGRITY}})
    lock = parse_npm_lock(data)
    assert dict(lock.packages) == {"node_modules/ms": "2.1.3"}
    assert lock.digest.startswith("sha256:")
    assert parse_npm_lock(data + b"\n").digest != lock.digest


def test_a_package_without_an_integrity_hash_is_refused_by_name():
    data = lock_bytes({"node_modules/left": {"version": "1.0.0", "resolved": "git+ssh://git@example.test/x.git"}})
    with pytest.raises(UserError, match="left has no integrity hash"):
        parse_npm_lock(data)


def test_an_old_lockfile_version_is_refused():
    with pytest.raises(UserError, match="lockfileVersion 1"):
        parse_npm_lock(json.dumps({"lockfileVersion": 1, "dependencies": {}}).encode())


def test_a_lock_out_of_step_with_package_json_names_the_field():
    lock = parse_npm_lock(lock_bytes({"node_modules/ms": {"version": "2.1.3", "integrity": INTEGRITY}}))
    assert stale_dependencies(b'{"dependencies": {"ms": "2.1.3"}}', lock) == []
    assert stale_dependencies(b'{"dependencies": {"ms": "2.1.2"}}', lock) == ["dependencies"]
    with pytest.raises(UserError, match="out of date with package.json's dependencies"):
        checked_npm_lock(b'{"dependencies": {"ms": "^2.1.0"}}', lock_bytes({}), "package-lock.json")
    with pytest.raises(UserError, match="not in the commit"):
        checked_npm_lock(b"{}", None, "package-lock.json")


def test_the_node_example_runs_node_on_its_main_script_in_production_mode():
    recipe = load_recipe(EXAMPLES / "node-hello")
    assert server_command(recipe) == ["node", "/app/server.js"]
    runtime, _ = image_settings(recipe, Commit(revision="0" * 40, time=0, version="v"), server_command(recipe))
    assert "NODE_ENV=production" in runtime["Env"] and "PORT=3000" in runtime["Env"]


def write_app(tmp_path, recipe_text: str):
    app = tmp_path / "app"
    shutil.copytree(EXAMPLES / "node-hello", app)
    (app / "imagebuild.yaml").write_text(recipe_text)
    return app


def test_package_lock_needs_runtime_node(tmp_path):
    app = write_app(tmp_path, "name: a\nextends: python-wsgi\nserver: {app: 'a:app'}\n"
                              "libraries: {package_lock: package-lock.json}\n")
    with pytest.raises(RecipeError, match="npm libraries need runtime.node"):
        load_recipe(app)


def test_a_missing_package_lock_is_refused_at_load(tmp_path):
    app = write_app(tmp_path, "name: a\nextends: node-http\nlibraries: {package_lock: package-lock.json}\n")
    (app / "package-lock.json").unlink()
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(app)


def test_lock_check_follows_package_lock(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(EXAMPLES / "node-hello", app)
    done = imagebuild("lock", app, "--check")
    assert done.returncode == 0, done.stderr
    package = json.loads((app / "package.json").read_text())
    package["dependencies"]["ms"] = "2.1.2"
    (app / "package.json").write_text(json.dumps(package))
    done = imagebuild("lock", app, "--check")
    assert done.returncode == 2
    assert "package.json's dependencies" in done.stderr and "npm install" in done.stderr
    done = imagebuild("lock", app)   # never rewrites npm's own lock
    assert done.returncode == 2 and "npm install" in done.stderr


# -- hostile or broken files: one line, exit 2, naming the file ------------------------------------------

def _deep(depth: int) -> bytes:
    return b'{"lockfileVersion": 3, "packages": {"": {}}, "x": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


@pytest.mark.parametrize("data, message", [
    (_deep(100_000), "nested too deeply"),
    (_deep(200), "more than 64 deep"),
    (b'{"lockfileVersion": 3, "packages": []}', "packages is not an object"),
    (b'{"lockfileVersion": true, "packages": {}}', "lockfileVersion bool"),
    (b'{"lockfileVersion": 3, "packages": {"node_modules/a": "1.0.0"}}', "package 'a' is not an object"),
    (b'{"lockfileVersion": 3, "packages": {"node_modules/a": {"version": ["1"], "integrity": "sha512-x"}}}',
     "the version or integrity of 'a' is not a string"),
    (b'{"lockfileVersion": 3, "packages": {"": []}}', "the root package"),
    (b'{"lockfileVersion": 3, "packages": {"": {"dependencies": ["ms"]}}}', "dependencies is not an object"),
    (b'{"lockfileVersion": 3, "packages": {"": {"dependencies": {"ms": {"v": 1}}}}}',
     "dependencies['ms'] is not a version string"),
    (b"\xff\xfe{}", "is not valid JSON"),
])
def test_a_malformed_lock_is_one_user_error_naming_the_file(data, message):
    with pytest.raises(UserError) as refused:
        checked_npm_lock(b"{}", data, "web/package-lock.json")
    assert message in refused.value.message and refused.value.message.startswith("web/package-lock.json")


def test_a_malformed_package_json_names_package_json_beside_the_lock():
    lock = lock_bytes({"node_modules/ms": {"version": "2.1.3", "integrity": INTEGRITY}})
    with pytest.raises(UserError, match=r"^web/package.json: devDependencies is not an object"):
        checked_npm_lock(b'{"devDependencies": "ms"}', lock, "web/package-lock.json")
    with pytest.raises(UserError, match=r"^web/package.json is JSON nested too deeply"):
        checked_npm_lock(b"[" * 100_000, lock, "web/package-lock.json")


def test_a_huge_lock_is_refused_before_it_is_parsed(monkeypatch):
    from imagebuild.sources import npm_lock

    monkeypatch.setattr(npm_lock, "MAX_LOCK_BYTES", 1024)
    monkeypatch.setattr(npm_lock, "MAX_PACKAGE_JSON_BYTES", 64)
    with pytest.raises(UserError, match="package-lock.json is over the 0 MiB"):
        checked_npm_lock(b"{}", lock_bytes({}) + b" " * 1024, "package-lock.json")
    with pytest.raises(UserError, match="package.json is over"):
        checked_npm_lock(b"{" + b" " * 64 + b"}", lock_bytes({}), "package-lock.json")


@pytest.mark.parametrize("json_out", [False, True])
def test_lock_check_of_a_broken_lock_is_one_line_and_one_json_object(tmp_path, json_out):
    app = tmp_path / "app"
    shutil.copytree(EXAMPLES / "node-hello", app)
    (app / "package-lock.json").write_bytes(b'{"lockfileVersion": 3, "packages": {"node_modules/a": 7}}')
    done = imagebuild("lock", app, "--check", *(["--json"] if json_out else []))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: package-lock.json: package 'a'")
    if json_out:
        assert json.loads(done.stdout)["error"]["exit_code"] == 2
    else:
        assert done.stdout == ""


@pytest.mark.parametrize("working_tree", [False, True], ids=["commit", "working-tree"])
def test_a_bake_reads_a_committed_lock_no_further_than_its_bound(tmp_path, monkeypatch, working_tree):
    from imagebuild.build.layers import npm
    from imagebuild.sources.app_tree import SourceTree
    from tests.bake_support import FIRST_COMMIT_TIME, commit_all, git

    app = tmp_path / "app"
    shutil.copytree(EXAMPLES / "node-hello", app)
    git(app, "init", "-q", "-b", "main")
    (app / "package-lock.json").write_bytes((app / "package-lock.json").read_bytes() + b" " * 5000)
    commit = commit_all(app, "first", FIRST_COMMIT_TIME)
    recipe = load_recipe(app)
    tree = SourceTree(app, commit, working_tree=working_tree)
    asked = []

    def read(path, limit=None):
        data = tree.read(tree.repo_path(path), limit)
        asked.append((path.name, limit, len(data)))
        return data

    from imagebuild.sources import npm_lock
    monkeypatch.setattr(npm, "MAX_LOCK_BYTES", 1024)
    monkeypatch.setattr(npm_lock, "MAX_LOCK_BYTES", 1024)
    with pytest.raises(UserError, match="package-lock.json is over the 0 MiB"):
        npm.lock_files(recipe, read)
    assert ("package-lock.json", 1024, 1025) in asked     # read one byte past the bound, no further
    monkeypatch.undo()
    assert npm.lock_files(recipe, lambda path, limit=None: tree.read(tree.repo_path(path), limit))[2].packages
