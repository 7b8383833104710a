"""Start-up budget: each everyday command imports only the heavy libraries its work needs.

Importing the Docker SDK costs ~170 ms, paramiko ~90 ms, typer ~50 ms, httpx ~40 ms, jinja2 and yaml ~20 ms,
cryptography (signing) ~50 ms: more
than the work of `images` or `status`. Each command runs for real (against a temporary store, a
recipe without a registry, and for push/pull an address nothing listens on) in a fresh interpreter,
which then reports which of those modules it loaded. Deterministic, so no service is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.lease import release_lease
from tests.ports import free_port
from tests.registry_support.images import write_app_image

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("docker", "paramiko", "httpx", "jinja2", "yaml", "typer", "concurrent.futures", "difflib", "cryptography",
         "kubernetes", "click", "rich", "pathspec")
ENGINE_OR_SSH = {"docker", "paramiko", "kubernetes"}     # kubernetes: ~2 s, only for environments with a cluster
REGISTRY_OR_RECIPE = {"httpx", "jinja2", "yaml"}

PROBE = """
import json, sys
from imagebuild.cli.main import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
sys.__stderr__.flush()
with open(sys.argv[1], "w") as out:
    json.dump(sorted(m for m in {heavy!r} if m in sys.modules), out)
""".format(heavy=HEAVY)

RECIPE = """name: hello
server:
  kind: command
  command: ["/bin/busybox", "echo", "hello"]
environments:
  - name: dev
  - name: test
  - name: prod
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    """An app directory with a recipe, and a store holding two versions, v1 promoted to dev."""
    root = tmp_path_factory.mktemp("budget")
    store = LayoutStore(root / "store").ensure()
    write_app_image(store, "hello", "v1")
    write_app_image(store, "hello", "v2", message="two")
    release_lease(store.root)     # else `gc` in the subprocess waits for this process
    (root / "imagebuild.yaml").write_text(RECIPE)
    loaded = imports(root, "promote", "v1", "--to", "dev")
    assert loaded is not None
    return root


def imports(app: Path, *argv: str) -> set[str]:
    report = app / "imports.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "IMAGEBUILD_STORE": str(app / "store"), "PYTHONPATH": str(REPO),
           "DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(report), *argv], cwd=app, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert report.exists(), f"{argv}: the command did not return\n{done.stderr}"
    return set(json.loads(report.read_text()))


def nowhere() -> str:
    return f"127.0.0.1:{free_port()}/budget/hello"


@pytest.mark.parametrize("argv", [
    ["--help"], ["images", "--help"], ["status", "--help"], ["history", "--help"], ["promote", "--help"],
    ["push", "--help"], ["pull", "--help"], ["rm", "--help"], ["gc", "--help"], ["bake", "--help"],
    ["deploy", "--help"], ["keygen", "--help"], ["sign", "--help"], ["verify", "--help"],
    ["provenance", "--help"], ["reproduce", "--help"], ["manifests", "--help"], ["sbom", "--help"],
], ids=" ".join)
def test_help_imports_nothing_heavy(app, argv):
    assert imports(app, *argv) - {"difflib", "click", "rich"} == {"typer"}     # help is typer's (click loads difflib)


@pytest.mark.parametrize("argv", [
    ["images"], ["images", "--all", "--json"], ["rm", "hello:v2"], ["gc"], ["gc", "--dry-run"], ["sbom", "hello:v1"],
], ids=" ".join)
def test_store_commands_import_no_registry_recipe_engine_or_ssh(app, argv):
    loaded = imports(app, *argv)
    assert not loaded & (ENGINE_OR_SSH | REGISTRY_OR_RECIPE), loaded
    if argv[0] == "images":
        assert "typer" not in loaded      # the fast path (cli/fast_path.py)


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "--json"], ["history", "dev"], ["promote", "v1", "--to", "test"],
    ["promote", "v1", "--to", "prod", "--dry-run"],
], ids=" ".join)
def test_recipe_commands_on_the_local_store_import_no_http_engine_or_ssh(app, argv):
    """A recipe without `registry:` and environments without hosts or policies: the recipe is read, nothing
    else; a recipe without template syntax needs no Jinja2, a simple command line no typer, reads of local
    files no threads, and no signing library (the promotion gates load it only for a policy)."""
    loaded = imports(app, *argv)
    assert not loaded & (ENGINE_OR_SSH | {"httpx", "jinja2", "typer", "concurrent.futures", "difflib",
                                          "cryptography"}), loaded


@pytest.mark.parametrize("argv", [["status"], ["history", "dev"], ["promote", "v1", "--to", "prod", "--dry-run"]],
                         ids=" ".join)
def test_recipe_commands_on_an_unchanged_recipe_import_no_yaml(app, argv):
    """The store remembers the loaded recipe (recipe/cache.py): read again unchanged, it needs neither
    YAML nor the loader, the schema and the checks."""
    imports(app, *argv)           # the first reading of this recipe in this store may fill the cache
    loaded = imports(app, *argv)
    assert not loaded & REGISTRY_OR_RECIPE, loaded
    assert not _imagebuild_modules(app, *argv) & {"imagebuild.recipe.loader", "imagebuild.recipe.schema",
                                                  "imagebuild.recipe.checks"}


def _imagebuild_modules(app: Path, *argv: str) -> set[str]:
    probe = PROBE.replace("for m in {heavy!r} if m in sys.modules".format(heavy=HEAVY),
                          "for m in sys.modules if m.startswith('imagebuild')")
    report = app / "modules.json"
    env = {**os.environ, "IMAGEBUILD_STORE": str(app / "store"), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", probe, str(report), *argv], cwd=app, env=env, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=60)
    return set(json.loads(report.read_text()))


@pytest.mark.parametrize("command", ["push", "pull", "sbom"])
def test_registry_commands_import_no_engine_or_ssh(app, command):
    argv = {"push": ["push", "hello:v1", "--to", nowhere()], "pull": ["pull", nowhere() + ":v1"],
            "sbom": ["sbom", nowhere() + ":v1"]}[command]
    loaded = imports(app, *argv)
    assert "httpx" in loaded     # the probe really reached the registry client
    assert not loaded & ENGINE_OR_SSH, loaded
    if command == "push":        # on the fast path: no typer, and httpx without its CLI's click and rich
        assert not loaded & {"typer", "click", "rich"}, loaded
    if command == "push":
        assert "typer" not in loaded, loaded


def test_a_bake_without_a_registry_imports_no_http_engine_or_ssh(app):
    """The bake's modules, imported as a warm local bake imports them (here it stops at once: the app
    is no git repository), leave the registry client to a bake that pushes or has a layer cache."""
    loaded = imports(app, "bake", str(app))
    assert "yaml" in loaded     # the probe really reached the bake
    assert not loaded & (ENGINE_OR_SSH | {"httpx", "typer", "click", "rich"}), loaded     # on the fast path


@pytest.mark.integration
def test_a_warm_bake_of_a_stock_recipe_imports_no_typer_jinja_or_threads(tmp_path, tmp_path_factory):
    """After an app-only commit, `bake` of flask-hello (the stock python-wsgi recipe): the server's
    templates render without Jinja2, the cached Debian layers need no threads, the command line no
    typer or click, and its plain `app.exclude` pattern (`tests/`) no pathspec."""
    from tests.bake_support import base_for, commit_all, example_repo, git, seed

    base = base_for("flask-hello", tmp_path_factory)
    repo = example_repo(tmp_path, "flask-hello", lock=base.lock_path)
    assert "exclude: [tests/]" in (repo / "imagebuild.yaml").read_text()
    store = seed(tmp_path / "store", base)
    imports(tmp_path, "bake", str(repo), "--store", str(store.root))      # builds the libraries and server
    (repo / "hello.py").write_text((repo / "hello.py").read_text() + "\n# an app-only change\n")
    commit_all(repo, "app only", 1_750_000_100)
    loaded = imports(tmp_path, "bake", str(repo), "--store", str(store.root), "--json")
    assert f"flask-hello:{git(repo, 'rev-parse', '--short', 'HEAD')}" in store.refs()     # the bake was made
    assert not loaded & (ENGINE_OR_SSH | {"httpx", "jinja2", "typer", "click", "rich", "concurrent.futures",
                                          "cryptography", "pathspec"}), loaded
