"""The plan: layer order, cache keys that change exactly when their inputs do, image settings."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from imagebuild.plan import (ANNOTATION_DIRTY, LAUNCHER_PATH, Commit, LayerInputs, chain, healthcheck,
                             make_plan)
from imagebuild.recipe.model import Environment, HealthSpec, Recipe, RuntimeSpec, ServerSpec

COMMIT = Commit(revision="a" * 40, time=1_700_000_000, version="aaaaaaa", source="https://example.test/app.git")


def inputs(**changes) -> list[LayerInputs]:
    base = {
        "os": LayerInputs("os", {"packages": {"bash": "5.2"}}, 100),
        "runtime": LayerInputs("runtime", {"python": "3.11"}, 100),
        "libraries": LayerInputs("libraries", {"requirements": "sha256:1"}, 200),
        "server": LayerInputs("server", {"files": "sha256:2"}, 300),
        "app": LayerInputs("app", {"files": "sha256:3"}, 400),
        "config": LayerInputs("config", {"files": "sha256:4"}, 300),
    }
    for name, value in changes.items():
        base[name] = value
    return [item for item in base.values() if item is not None]


def keys(layer_inputs) -> dict[str, str]:
    return {layer.name: layer.key for layer in chain(layer_inputs)}


def changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if before[name] != after.get(name)}


def test_layers_come_bottom_to_top_whatever_order_they_are_given_in():
    planned = chain(list(reversed(inputs())))
    assert [layer.name for layer in planned] == ["os", "runtime", "libraries", "server", "app", "config"]
    assert planned[0].parent_key is None
    assert planned[1].parent_key == planned[0].key


def test_keys_are_stable_for_equal_inputs():
    assert keys(inputs()) == keys(inputs())


def test_an_app_change_changes_only_the_app_key():
    before = keys(inputs())
    after = keys(inputs(app=LayerInputs("app", {"files": "sha256:other"}, 500)))
    assert changed(before, after) == {"app"}


def test_a_config_change_changes_only_the_config_key():
    before = keys(inputs())
    after = keys(inputs(config=LayerInputs("config", {"files": "sha256:other"}, 300)))
    assert changed(before, after) == {"config"}


def test_a_lower_change_invalidates_everything_above_it():
    before = keys(inputs())
    after = keys(inputs(libraries=LayerInputs("libraries", {"requirements": "sha256:new"}, 200)))
    assert changed(before, after) == {"libraries", "server", "app", "config"}
    after_os = keys(inputs(os=LayerInputs("os", {"packages": {"bash": "5.3"}}, 100)))
    assert changed(before, after_os) == set(before)


def test_the_timestamp_is_part_of_the_key():
    before = keys(inputs())
    after = keys(inputs(server=LayerInputs("server", {"files": "sha256:2"}, 301)))
    assert "server" in changed(before, after)


def test_absent_layers_are_skipped_and_keys_still_chain():
    planned = chain(inputs(libraries=None, runtime=None))
    assert [layer.name for layer in planned] == ["os", "server", "app", "config"]
    assert planned[1].parent_key == planned[0].key
    assert planned[3].parent_key == planned[1].key  # config hangs off the server, not the app


def test_unknown_layer_names_are_refused():
    with pytest.raises(ValueError):
        chain([LayerInputs("kernel", {}, 0)])


def recipe(**changes) -> Recipe:
    base = Recipe(name="hello", runtime=RuntimeSpec(python="3.11"),
                  server=ServerSpec(kind="gunicorn", app="hello:app", port=8000),
                  health=HealthSpec(path="/health", interval=7, timeout=2, retries=4, start_period=3),
                  environments=(Environment("dev"), Environment("prod")))
    return replace(base, **changes)


def test_image_settings_name_the_commit_and_run_the_launcher_as_non_root():
    plan = make_plan(recipe(), COMMIT, inputs(), ["python3.11", "-m", "gunicorn"])
    runtime = plan.runtime
    assert runtime["User"] == "10001:10001"
    assert runtime["WorkingDir"] == "/app"
    assert runtime["Entrypoint"] == [LAUNCHER_PATH]
    assert runtime["Cmd"] == ["python3.11", "-m", "gunicorn"]
    assert runtime["ExposedPorts"] == {"8000/tcp": {}}
    assert "PORT=8000" in runtime["Env"]
    annotations = plan.annotations
    assert annotations["org.opencontainers.image.revision"] == "a" * 40
    assert annotations["org.opencontainers.image.version"] == "aaaaaaa"
    assert annotations["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert annotations["org.opencontainers.image.source"] == "https://example.test/app.git"
    assert runtime["Labels"] == annotations
    assert plan.created == "2023-11-14T22:13:20Z"
    assert ANNOTATION_DIRTY not in annotations


def test_a_dirty_commit_is_marked():
    plan = make_plan(recipe(), replace(COMMIT, version="aaaaaaa-dirty", dirty=True), inputs(), ["true"])
    assert plan.annotations[ANNOTATION_DIRTY] == "true"
    assert plan.annotations["org.opencontainers.image.version"] == "aaaaaaa-dirty"


def test_healthcheck_durations_are_nanoseconds_and_need_no_curl():
    check = healthcheck(recipe())
    assert check["Interval"] == 7_000_000_000
    assert check["Timeout"] == 2_000_000_000
    assert check["StartPeriod"] == 3_000_000_000
    assert check["Retries"] == 4
    assert check["Test"][:3] == ["CMD", "bash", "-c"]
    assert "/dev/tcp/127.0.0.1/${PORT:-8000}" in check["Test"][3]
    assert "curl" not in check["Test"][3]


def test_the_healthcheck_probe_really_speaks_http(tmp_path):
    """Run the probe with the host's bash against a one-shot local HTTP server."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        good = healthcheck(recipe(server=ServerSpec(kind="gunicorn", app="x:y", port=port)))["Test"]
        bad = healthcheck(recipe(server=ServerSpec(kind="gunicorn", app="x:y", port=port),
                                 health=HealthSpec(path="/missing")))["Test"]
        assert subprocess.run(good[1:], timeout=10).returncode == 0
        assert subprocess.run(bad[1:], timeout=10).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
