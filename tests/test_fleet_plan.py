"""Fleet keys and wave planning: pure, no host involved."""

from __future__ import annotations

import pytest
import yaml

from imagebuild.errors import UserError
from imagebuild.recipe.fleet import BatchSize, parse_batch, parse_duration
from imagebuild.recipe.loader import load_recipe
from imagebuild.release.deploy.fleet import NEXT_STEP, describe, plan_waves


@pytest.mark.parametrize("text, hosts, size", [
    ("1", 4, 1), ("2", 4, 2), (2, 5, 2), ("10", 4, 4),            # a count, never more than the fleet
    ("25%", 4, 1), ("50%", 4, 2), ("50%", 5, 2), ("100%", 7, 7),  # a share, rounded down
    ("10%", 4, 1), ("12.5%", 16, 2),                              # never below one host
])
def test_batch_sizes(text, hosts, size):
    assert parse_batch(text).of(hosts) == size


@pytest.mark.parametrize("text", ["0", "0%", "150%", "two", "-1", "2.5", "%", "25 %x"])
def test_bad_batches_are_refused(text):
    with pytest.raises(UserError):
        parse_batch(text)


@pytest.mark.parametrize("text, seconds", [("90", 90), (45, 45), ("30s", 30), ("2m", 120), ("1m30s", 90),
                                           ("1h", 3600), ("0s", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "1s1m", "m", "1.5m", "-3"])
def test_bad_durations_are_refused(text):
    with pytest.raises(UserError):
        parse_duration(text)


def test_waves_without_a_canary_are_batches_in_recipe_order():
    assert plan_waves(4, BatchSize(count=1)) == [[0], [1], [2], [3]]
    assert plan_waves(4, BatchSize(count=2)) == [[0, 1], [2, 3]]
    assert plan_waves(5, BatchSize(count=2)) == [[0, 1], [2, 3], [4]]
    assert plan_waves(4, BatchSize(percent=50)) == [[0, 1], [2, 3]]
    assert plan_waves(0, BatchSize(count=2)) == []


def test_the_canary_goes_alone_first_and_the_rest_in_batches():
    assert plan_waves(4, BatchSize(count=2), canary=1) == [[0], [1, 2], [3]]
    assert plan_waves(5, BatchSize(count=2), canary=1) == [[0], [1, 2], [3, 4]]
    assert plan_waves(6, BatchSize(percent=50), canary=2) == [[0, 1], [2, 3, 4], [5]]
    assert plan_waves(2, BatchSize(count=2), canary=3) == [[0, 1]]   # a canary as large as the fleet


def recipe(tmp_path, **deploy):
    path = tmp_path / "imagebuild.yaml"
    path.write_text(yaml.safe_dump({"name": "web", "server": {"kind": "command", "command": ["./serve"]},
                                    "environments": [{"name": "dev"}], "deploy": deploy}))
    return path


@pytest.mark.parametrize("deploy, key, says", [
    ({"batch": "0%"}, "deploy.batch", "not a share"),
    ({"batch": "half"}, "deploy.batch", "neither a host count nor a percentage"),
    ({"canary": -1}, "deploy.canary", "must not be negative"),
    ({"canary": 1, "canary_wait": "soon"}, "deploy.canary_wait", "not a duration"),
    ({"canary_wait": "30s"}, "deploy.canary_wait", "no effect without deploy.canary"),
    ({"canary": 1, "canary_wait": "25h"}, "deploy.canary_wait", "at most"),
    ({"max_sessions": 0}, "deploy.max_sessions", "between 1 and"),
])
def test_bad_fleet_keys_are_one_line_when_the_recipe_loads(tmp_path, deploy, key, says):
    with pytest.raises(UserError) as caught:
        load_recipe(recipe(tmp_path, **deploy))
    line = caught.value.one_line()
    assert key in line and says in line and "\n" not in line


def test_the_first_line_says_how_the_hosts_are_swapped(tmp_path):
    assert describe(load_recipe(recipe(tmp_path)), 3) == "one at a time"
    assert describe(load_recipe(recipe(tmp_path, batch="50%")), 4) == "2 at a time"
    fleet = load_recipe(recipe(tmp_path, batch=2, canary=1, canary_wait="1m"))
    assert describe(fleet, 4) == "1 canary host(s) watched for 60 s first, then 2 at a time"


def test_every_step_a_host_reports_names_the_step_after_it():
    # A host that fails names the step it was in: the one after the last it reported.
    for step in ("connect", "check", "pull", "migrate", "migrated", "start", "healthy", "reload", "switch", "stop"):
        assert step in NEXT_STEP
    assert NEXT_STEP["start"] == "health" and NEXT_STEP["healthy"] == "switch" and NEXT_STEP["check"] == "pull"


def test_status_says_which_digest_serves_where_and_when_an_environment_is_mixed():
    from imagebuild.cli.everyday import _mixed_line, host_line as _host_line
    from imagebuild.release.deploy.status import HostStatus, is_mixed, serving

    old, new = "sha256:" + "1" * 64, "sha256:" + "2" * 64

    def row(name, digest, version, state="running", **more):
        return HostStatus("prod", f"ssh://deploy@{name}", 8080, version=version, digest=digest, state=state, **more)

    rows = [row("web-1", new, "v2"), row("web-2", old, "v1"), row("web-3", old, "v1"),
            row("web-4", None, None, state=None, note="cannot reach web-4")]
    assert serving(rows) == {new: ["ssh://deploy@web-1"], old: ["ssh://deploy@web-2", "ssh://deploy@web-3"]}
    assert is_mixed(rows) and not is_mixed(rows[1:]) and not is_mixed([])
    # A stopped container serves nothing: it does not make the environment mixed.
    assert not is_mixed([row("web-1", new, "v2", state="exited"), row("web-2", old, "v1")])
    assert _mixed_line(rows) == f"MIXED: 1 host(s) on v2 ({new[:19]}), 2 host(s) on v1 ({old[:19]})"
    rolled = row("web-2", old, "v1", rolled_back={"from_version": "v2", "at": "2026-01-01T00:00:00Z",
                                                 "reason": "ssh://deploy@web-3: health failed: no 200"})
    line = _host_line(rolled, old, "v1")
    assert f"v1 ({old[:19]}) since" in line
    assert "rolled back from v2 at 2026-01-01T00:00:00Z: ssh://deploy@web-3: health failed" in line
