"""The everyday commands' fast path gives exactly what the typer command line gives.

Each command line is run both ways in this process: through `main` (which takes the fast path when
it can) and through the typer command line alone; the function called, its arguments, the output,
the errors and the exit code must be the same. A command line the fast path does not take must be
left to typer.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from imagebuild.cli import bake_run, everyday, fast_path
from imagebuild.cli import main as cli_main
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.lease import release_lease
from tests.registry_support.images import write_app_image
from tests.test_import_budget import RECIPE     # three environments, no registry, no hosts


@pytest.fixture(autouse=True)
def stop_signals_given_back():
    """`_run_typer` runs here without `main`, which alone puts the Ctrl-C and SIGTERM handlers back after
    a stop ignored them: left ignored, later tests in this process (and the processes they start,
    which inherit an ignored signal) would never see a Ctrl-C."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)

TAKEN = [
    ["images"], ["images", "--all", "--json"], ["images", "--store=/nowhere/store"],
    ["status"], ["status", "--json", "--no-hosts", "--secure"], ["status", "--known-hosts", "/nowhere/kh", "--no-agent"],
    ["status", "--recipe", "other.yaml", "--insecure"],
    ["history", "dev"], ["history", "--json", "prod"], ["history", "dev", "--store", "/nowhere"],
    ["promote", "v1", "--to", "dev"], ["promote", "--to=test", "--dry-run", "v1", "--json"],
    ["promote", "v1", "--to", ""],
    ["push", "hello:v1"], ["push", "hello:v1", "--to", "127.0.0.1:1/x/hello", "--parallel", "8", "--insecure"],
    ["push", "hello:v1", "--parallel=32"],
    ["bake"], ["bake", "app", "--json"], ["bake", "--push", "--json", "--insecure", "--store", "/nowhere/store"],
    ["bake", "--output", "oci:out", "--output=docker-archive:out.tar", "--load", "--allow-dirty"],
    ["bake", "--cache-from", "127.0.0.1:1/c", "--cache-to=127.0.0.1:1/d", "--format", "disk", "--secure"],
    ["bake", "--sign", "/nowhere/key", "--passphrase-env", "PASS", "."],
]
LEFT_TO_TYPER = [
    [], ["--help"], ["images", "--help"], ["status", "-i", "key"], ["status", "--identity", "key"],
    ["history"], ["history", "dev", "prod"], ["promote", "v1"], ["promote", "v1", "--to"],
    ["promote", "v1", "--to", "-x"], ["promote", "v1", "--to", "dev", "--to", "test"],
    ["images", "--json=1"], ["images", "--bogus"], ["images", "--"], ["push", "hello:v1", "--parallel", "0"],
    ["push", "hello:v1", "--parallel", "33"], ["push", "hello:v1", "--parallel", "x"], ["push", "-"],
    ["bake", "-o", "oci:out"], ["bake", "a", "b"], ["bake", "--output"], ["bake", "--output", "-x"],
    ["bake", "--push", "--push"], ["bake", "--json=1"], ["bake", "--help"], ["gc"],
]


@pytest.fixture(scope="module")
def template_store(tmp_path_factory) -> Path:
    store = LayoutStore(tmp_path_factory.mktemp("fast-path") / "store").ensure()
    write_app_image(store, "hello", "v1")
    write_app_image(store, "hello", "v2", message="two")
    release_lease(store.root)
    return store.root


@pytest.fixture
def app(tmp_path, monkeypatch, template_store) -> Path:
    """An app directory with a recipe and its own copy of a store holding v1 and v2."""
    store = LayoutStore(tmp_path / "store")
    shutil.copytree(template_store, store.root)
    (tmp_path / "imagebuild.yaml").write_text(RECIPE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGEBUILD_STORE", str(store.root))
    monkeypatch.delenv("IMAGEBUILD_KNOWN_HOSTS", raising=False)
    return tmp_path


def called_by_typer(argv: list[str]) -> tuple[str, dict]:
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        for name in ("images", "status", "history", "promote", "push"):
            patch.setattr(everyday, name, lambda *args, _name=name, **kwargs: calls.append((_name, args, kwargs)))
        patch.setattr(bake_run, "bake", lambda *args, **kwargs: calls.append(("bake", args, kwargs)))
        with pytest.raises(SystemExit):
            cli_main._run_typer(list(argv), False)
    (name, args, kwargs), = calls
    assert not args
    return name, kwargs


@pytest.mark.parametrize("argv", TAKEN, ids=" ".join)
def test_the_fast_path_calls_what_typer_calls(app, monkeypatch, argv):
    fast = fast_path.parse(argv)
    assert fast is not None
    name, kwargs = fast
    by_typer = called_by_typer(argv)
    # typer gives an absent list option as an empty one
    if by_typer[1].get("identity") == []:
        by_typer[1]["identity"] = None
    assert (name, kwargs) == by_typer


def test_the_environment_names_the_store_and_known_hosts_as_for_typer(app, monkeypatch):
    monkeypatch.setenv("IMAGEBUILD_KNOWN_HOSTS", str(app / "kh"))
    fast = fast_path.parse(["status"])
    monkeypatch.setenv("IMAGEBUILD_KNOWN_HOSTS", str(app / "kh"))
    by_typer = called_by_typer(["status"])
    assert fast[1]["known_hosts"] == app / "kh" == by_typer[1]["known_hosts"]
    assert fast[1]["store"] == app / "store" == by_typer[1]["store"]


def test_an_unreadable_path_is_left_to_typer(app):
    (app / "locked").mkdir(mode=0)
    try:
        if os.access(app / "locked", os.R_OK):
            pytest.skip("running as root: every path is readable")
        assert fast_path.parse(["images", "--store", str(app / "locked")]) is None
    finally:
        (app / "locked").chmod(0o755)


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=lambda argv: " ".join(argv) or "(nothing)")
def test_anything_else_is_left_to_typer(argv):
    assert fast_path.parse(argv) is None


def outcome(capsys, run) -> tuple[object, str, str]:
    with pytest.raises(SystemExit) as exited:
        run()
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.parametrize("argv", [
    ["images"], ["images", "--json", "--all"], ["status"], ["status", "--json"], ["history", "dev"],
    ["history", "dev", "--json"], ["promote", "v1", "--to", "dev", "--dry-run"], ["promote", "v1", "--to", "dev"],
    ["promote", "v1", "--to", "prod"], ["promote", "v9", "--to", "dev", "--json"], ["history", "nowhere"],
    ["status", "--recipe", "missing.yaml"], ["push", "hello:v1"], ["push", "hello:v1", "--to", "noregistry"],
    ["images", "--store", "imagebuild.yaml"],
    ["bake", "nowhere"], ["bake", "--json"], ["bake", "--passphrase-env", "PASS"], ["bake", "--format", "vm"],
    ["bake", "--output", "nowhere:x"],
], ids=" ".join)
def test_the_output_errors_and_exit_code_are_typers(app, capsys, argv):
    assert fast_path.parse(argv) is not None
    # Each run on a fresh copy of the store, so a promotion happens both times.
    shutil.copytree(app / "store", app / "pristine")
    fast = outcome(capsys, lambda: cli_main.main(list(argv)))
    shutil.rmtree(app / "store")
    shutil.copytree(app / "pristine", app / "store")
    typer_only = outcome(capsys, lambda: cli_main._run_typer(list(argv), "--json" in argv))
    assert fast == typer_only


WITNESS = """
import atexit, gc, runpy, sys
atexit.register(lambda: sys.stderr.write(f"exit functions ran, collector on: {gc.isenabled()}\\n"))
sys.argv = ["imagebuild", *sys.argv[1:]]
runpy.run_module("imagebuild", run_name="__main__", alter_sys=True)
"""


def run_whole(app: Path, *argv: str, verbose: bool = False):
    import subprocess
    import sys

    interpreter = [sys.executable, *(["-v"] if verbose else []), "-c", WITNESS, *argv]
    return subprocess.run(interpreter, cwd=app, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})


@pytest.mark.parametrize("argv", [["status"], ["history", "dev"], ["images"]], ids=" ".join)
def test_a_finished_read_only_command_ends_without_the_tear_down_and_loses_nothing(app, argv):
    # `-v` reports each module the tear-down removes ("# cleanup ..."); none here, yet the output
    # (a pipe, so buffered) is whole, exit functions ran and the code is 0. The cyclic garbage
    # collector stayed off.
    assert run_whole(app, "promote", "v1", "--to", "dev").returncode == 0
    done = run_whole(app, *argv, verbose=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exit functions ran, collector on: False" in done.stderr
    assert "# cleanup" not in done.stderr
    assert done.stdout == run_whole(app, *argv).stdout
    assert done.stdout.endswith("\n") and done.stdout.count("\n") == {"status": 3, "history": 1, "images": 3}[argv[0]]


@pytest.mark.parametrize(("argv", "collector"), [(["history", "nowhere"], False),
                                               (["promote", "v1", "--to", "dev"], True)], ids=str)
def test_a_failed_or_writing_command_ends_as_always(app, argv, collector):
    # A read-only command runs without the collector even when it fails (it is off before the
    # command line is read); a writing one has it back before its work starts.
    done = run_whole(app, *argv, verbose=True)
    assert "# cleanup" in done.stderr
    assert f"exit functions ran, collector on: {collector}" in done.stderr


def test_main_called_in_a_process_raises_system_exit_as_before(app, capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["status"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.count("\n") == 3


BAKE_WITNESS = """
import gc, runpy, sys
import imagebuild.build.bake as build

collections = lambda: sum(stats["collections"] for stats in gc.get_stats())
before = collections()


def witness(*args, **kwargs):
    # Where the bake's work starts: what the collector did through the imports, and is doing now.
    sys.stderr.write(f"collections during imports: {collections() - before}, collector on: {gc.isenabled()}, "
                     f"frozen: {gc.get_freeze_count() > 0}\\n")
    sys.exit(0)


build.bake = witness
sys.argv = ["imagebuild", *sys.argv[1:]]
runpy.run_module("imagebuild", run_name="__main__", alter_sys=True)
"""


def test_a_bake_imports_without_the_collector_and_works_with_it(tmp_path):
    # The collector's passes over the objects a bake's imports make free nothing; it is held off
    # through them and is back on, with those objects frozen out of its passes, when the work starts.
    import subprocess
    import sys

    from tests.bake_support import example_repo

    repo = example_repo(tmp_path, "flask-hello")
    done = subprocess.run([sys.executable, "-c", BAKE_WITNESS, "bake", str(repo), "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.stderr == "collections during imports: 0, collector on: True, frozen: True\n", done.stderr[-2000:]


def test_bake_called_in_a_process_leaves_the_collector_as_it_found_it(tmp_path, monkeypatch, capsys):
    import gc

    import imagebuild.build.bake as build
    from tests.bake_support import example_repo

    repo = example_repo(tmp_path, "flask-hello")
    seen = []

    def witness(*args, **kwargs):
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        raise SystemExit(0)

    monkeypatch.setattr(build, "bake", witness)
    frozen = gc.get_freeze_count()
    with pytest.raises(SystemExit):
        cli_main.main(["bake", str(repo), "--store", str(tmp_path / "store")])
    assert seen == [(True, frozen)]
