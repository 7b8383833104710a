"""Database changes with zero downtime, with examples/flask-surname on a real PostgreSQL 15, real sshd, the
Docker engine and the nginx front: expand before the swap, the old version proven against it, contract after;
rollback before and after the contract; failing phases and what the hosts' records say.

The images are baked once for the module (tests/migrations_support.py). Each test has its own database,
public port and host state; only the recipe's deploy section changes between deploys.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.bake_support import base_for
from tests.migrations_support import PeopleLoad, bake_surname, make_site, remove_baked_images, remove_site
from tests.postgres_support import postgres  # noqa: F401
from tests.ssh_support import sshd, sshd_factory  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def baked(tmp_path_factory, sshd, registry, docker_client):  # noqa: F811
    made = bake_surname(tmp_path_factory.mktemp("surname"), base_for("flask-surname", tmp_path_factory), sshd)
    yield made
    remove_baked_images(made)


@pytest.fixture
def site(baked, postgres, tmp_path):  # noqa: F811
    made = make_site(baked, postgres, tmp_path)
    yield made
    remove_site(made)


def steps(result: dict) -> list[str]:
    return [event["step"] for event in result["events"]]


def one_error_line(done: subprocess.CompletedProcess, code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def test_v1_to_v2_then_contract_under_load_with_a_rollback_before_the_contract_and_none_after(site):
    site.configure(contract_when="next-deploy")
    site.promote("v1")
    first = site.deployed()
    assert first["migrations"]["phases"].keys() == {"expand"}
    assert site.column_served() == "surname"

    with PeopleLoad(site) as load:
        load.wait_for(20)
        site.promote("v2")
        second = site.deployed()
        load.wait_for(20)
        # next-deploy: v1's deferred contract first, from v1's image; then v2's expand, then the serving v1
        # proven against it, all before the new container started.
        order = steps(second)
        assert (order.index("contracted") < order.index("migrated") < order.index("compatible")
                < order.index("start") < order.index("switch")), order
        assert f"from {site.baked.versions['v1']}" in next(e for e in second["events"] if e["step"] == "contract")["message"]
        assert site.record()["v1"]["phases"].keys() == {"expand", "contract"}
        assert site.column_served() == "last_name"
        assert site.record()["v2"]["phases"].keys() == {"expand"}

        # Back to v1 before the contract: allowed, and v1 reads what v2 wrote (the trigger kept surname).
        back = site.deployed("--to", site.baked.versions["v1"])
        assert back["rolled_back"] and site.column_served() == "surname"
        load.wait_for(20)

        site.promote("v2")
        site.deployed()
        load.wait_for(10)
        # Every host serves v2 and no v1 runs: a deploy with the contract due after the swap contracts now.
        site.configure(contract_when="after-swap")
        third = site.deployed()
        assert [h["action"] for h in third["hosts"]] == ["unchanged"]
        assert "contracted" in steps(third) and third["migrations"]["phases"].keys() == {"expand", "contract"}
        load.wait_for(20)
    assert load.failures == [], load.failures[:5]

    # No row lost, none wrong; surname is gone.
    with site.db.connect(site.database) as db:
        rows = dict(db.execute("SELECT id, last_name FROM people").fetchall())
        columns = {c for (c,) in db.execute("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = 'people'")}
    assert columns == {"id", "last_name"}
    assert len(load.names) > 80 and {k: rows.get(k) for k in load.names} == load.names

    status = json.loads(site.run("status", "--json", "--identity", str(site.baked.identity), "--known-hosts",
                                 str(site.baked.known_hosts), "--no-agent").stdout)
    [host] = next(e for e in status["environments"] if e["environment"] == "dev")["hosts"]
    assert [r["version"] for r in host["migrations"]][-2:] == [site.baked.versions["v1"], site.baked.versions["v2"]]
    text = site.run("status", "--identity", str(site.baked.identity), "--known-hosts", str(site.baked.known_hosts),
                    "--no-agent").stdout
    assert "migrations: expand ran " in text and ", contract ran " in text, text

    # Across the contract that ran: refused before the tag moves; v2 keeps serving.
    refused = one_error_line(site.deploy("--to", site.baked.versions["v1"]), 2)
    assert f"back to {site.baked.versions['v1']}: the contract phase of {site.baked.versions['v2']} ran" in refused
    assert "--force" in refused and site.column_served() == "last_name"
    history = site.run("history", "dev", "--json")
    assert json.loads(history.stdout)["promotions"][0]["version"] == site.baked.versions["v2"], history.stdout


def test_failing_phases_and_an_expand_the_old_version_cannot_survive_stop_with_exit_6(site, docker_client):
    v1, v2, broken = (site.baked.versions[k] for k in ("v1", "v2", "broken"))
    # A contract that fails: v1 serves, the record says expand ran and contract failed.
    site.configure(contract=["python3", "/app/migrate.py", "contrakt"])
    site.promote("v1")
    error = one_error_line(site.deploy(), 6)
    assert "contract migration `python3 /app/migrate.py contrakt`" in error and "exit 1" in error
    assert "unknown phase 'contrakt'" in error and f"{v1} serves on every host" in error
    record = site.record()["v1"]
    assert record["phases"].keys() == {"expand"} and record["failed"].keys() == {"contract"}
    assert site.column_served() == "surname"
    # Deploying again retries the contract: nothing else changes.
    site.configure()
    again = site.deployed()
    assert [h["action"] for h in again["hosts"]] == ["unchanged"] and "contracted" in steps(again)
    assert site.record()["v1"]["phases"].keys() == {"expand", "contract"} and not site.record()["v1"]["failed"]

    # An expand that fails (a forward deploy after v1's contract: no rollback, so no refusal): nothing
    # starts, v1 keeps serving.
    site.configure(expand=["python3", "/app/migrate.py", "expnd"])
    site.promote("v2")
    error = one_error_line(site.deploy(), 6)
    assert "expand migration `python3 /app/migrate.py expnd`" in error and f"{v1} keeps serving" in error
    assert site.record()["v2"] == {**site.record()["v2"], "phases": {}}
    assert site.record()["v2"]["failed"].keys() == {"expand"}

    # v2's expand is fine for v1's health path, but the smoke test, run from v1's image, fails.
    site.configure(smoke=["python3", "-c", "import people, sys; sys.exit('smoke: fails with ' + people.NAME_COLUMN)"])
    error = one_error_line(site.deploy(), 6)
    assert f"the serving {v1} no longer works after the expand phase of {v2}: its smoke test" in error, error
    assert "(exit 1): smoke: fails with surname;" in error and f"{v1} keeps serving" in error
    assert site.record()["v2"]["phases"].keys() == {"expand"} and site.record()["v2"]["failed"].keys() == {"compatible"}
    assert site.column_served() == "surname"

    # An expand that renames the column v1 reads: stopped at the check of the serving version.
    site.configure()
    site.promote("broken")
    error = one_error_line(site.deploy(), 6)
    assert f"the serving {v1} no longer works after the expand phase of {broken}" in error, error
    assert "GET /health answered HTTP/1." in error and " 500 INTERNAL SERVER ERROR;" in error and f"{v1} keeps serving" in error
    record = site.record()["broken"]
    assert record["phases"].keys() == {"expand"} and record["failed"].keys() == {"compatible"}
    running = docker_client.containers.list(filters={"label": f"dev.imagebuild.deploy.port={site.port}"})
    assert [c.labels["dev.imagebuild.deploy.version"] for c in running] == [v1]
    assert v2 not in json.dumps(site.record()["v1"])
