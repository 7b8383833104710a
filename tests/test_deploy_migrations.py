"""Database changes with zero downtime, with examples/flask-surname on a real PostgreSQL 15, real sshd, the
Docker engine and the nginx front: expand before the swap, the old version proven against it, contract after;
rollback before and after the contract; failing phases and what the hosts' records say.

The images are baked once for the module: v1 (reads and writes people.surname), v2 (people.last_name, the
example as committed) and `broken` (an expand that renames the column, which v1 cannot survive). Each test
has its own database, public port and host state; only the recipe's deploy section changes between deploys.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.bake_support import FIRST_COMMIT_TIME, base_for, commit_all, example_repo, seed
from tests.conftest import REGISTRY, imagebuild
from tests.postgres_support import Postgres, postgres  # noqa: F401
from tests.ssh_support import free_port, sshd, sshd_factory, write_known_hosts  # noqa: F401

pytestmark = pytest.mark.integration

EXPAND = ["python3", "/app/migrate.py", "expand"]
CONTRACT = ["python3", "/app/migrate.py", "contract"]
BREAKING_EXPAND = "ALTER TABLE people RENAME COLUMN surname TO last_name;\n"


@dataclass
class Baked:
    repo: Path
    store: Path
    registry: str
    known_hosts: Path
    identity: Path
    server_url: str
    versions: dict[str, str] = field(default_factory=dict)


def bake_push(baked: Baked, label: str) -> None:
    done = imagebuild("bake", baked.repo, "--store", baked.store, "--push", "--json")
    assert done.returncode == 0, done.stderr
    baked.versions[label] = json.loads(done.stdout)["version"]


@pytest.fixture(scope="module")
def baked(tmp_path_factory, sshd, registry, docker_client) -> Baked:  # noqa: F811
    directory = tmp_path_factory.mktemp("surname")
    base = base_for("flask-surname", tmp_path_factory)
    repo = example_repo(directory, "flask-surname", lock=base.lock_path)
    tag = uuid.uuid4().hex[:8]
    recipe = yaml.safe_load((repo / "imagebuild.yaml").read_text())
    recipe["registry"] = f"{REGISTRY}/deploytest-{tag}"
    (repo / "imagebuild.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    commit_all(repo, "v2", FIRST_COMMIT_TIME + 60)
    made = Baked(repo, directory / "store", recipe["registry"], write_known_hosts(directory / "known_hosts", sshd),
                 sshd.client_key, sshd.url)
    seed(made.store, base)
    bake_push(made, "v2")
    v2_files = {path: path.read_text() for path in (repo / "people.py", repo / "migrations/expand/002_last_name.sql",
                                                    repo / "migrations/contract/002_drop_surname.sql")}

    # v1: the surname column, and only the first migration.
    (repo / "people.py").write_text(v2_files[repo / "people.py"].replace('NAME_COLUMN = "last_name"',
                                                                         'NAME_COLUMN = "surname"'))
    (repo / "migrations/expand/002_last_name.sql").unlink()
    (repo / "migrations/contract/002_drop_surname.sql").unlink()
    commit_all(repo, "v1", FIRST_COMMIT_TIME)
    bake_push(made, "v1")

    # broken: v2's code with an expand that renames the column; unlinted (no sql:), or bake would refuse it.
    (repo / "people.py").write_text(v2_files[repo / "people.py"])
    (repo / "migrations/expand/002_last_name.sql").write_text(BREAKING_EXPAND)
    unlinted = {**recipe, "deploy": {**recipe["deploy"],
                                     "migrations": {k: v for k, v in recipe["deploy"]["migrations"].items()
                                                    if k != "sql"}}}
    (repo / "imagebuild.yaml").write_text(yaml.safe_dump(unlinted, sort_keys=False))
    commit_all(repo, "broken", FIRST_COMMIT_TIME + 120)
    bake_push(made, "broken")

    # The checkout deploys run from: v2's files (deploy lints them).
    for path, text in v2_files.items():
        path.write_text(text)
    (repo / "imagebuild.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    commit_all(repo, "v2 again", FIRST_COMMIT_TIME + 180)
    yield made
    images = subprocess.run(["docker", "images", "-q", f"{made.registry}/flask-surname"],
                            capture_output=True, text=True).stdout.split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], capture_output=True)


@dataclass
class Site:
    """One environment of the app for one test: its own database, public port, host state and env file."""

    baked: Baked
    db: Postgres
    database: str
    port: int
    state_dir: Path
    env_file: Path

    def configure(self, **migrations) -> None:
        """The recipe's deploy section for the next command (the images do not change)."""
        recipe = yaml.safe_load((self.baked.repo / "imagebuild.yaml").read_text())
        recipe["environments"][0]["hosts"] = [f"{self.baked.server_url}?port={self.port}"]
        recipe["deploy"] = {
            "listen": "127.0.0.1", "port": self.port, "drain": 2, "health_timeout": 60,
            "state_dir": str(self.state_dir), "env_file": str(self.env_file), "smoke": ["python3", "/app/smoke.py"],
            "migrations": {"expand": EXPAND, "contract": CONTRACT, "contract_when": "after-swap", "sql": "migrations",
                           **migrations}}
        (self.baked.repo / "imagebuild.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return imagebuild(*args, "--recipe", self.baked.repo, "--store", self.baked.store)

    def promote(self, label: str) -> None:
        done = self.run("promote", self.baked.versions[label], "--to", "dev")
        assert done.returncode == 0, done.stderr

    def deploy(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("deploy", "dev", "--json", "--identity", str(self.baked.identity),
                        "--known-hosts", str(self.baked.known_hosts), "--no-agent", *args)

    def deployed(self, *args: str) -> dict:
        done = self.deploy(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def record(self) -> dict[str, dict]:
        """The host's migration record, by version."""
        [path] = self.state_dir.glob("*/migrations.json")
        versions = {v: k for k, v in self.baked.versions.items()}
        return {versions.get(r["version"], r["version"]): r for r in json.loads(path.read_text())["releases"]}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def column_served(self) -> str:
        with urllib.request.urlopen(self.url("/"), timeout=10) as answer:
            return json.loads(answer.read())["column"]


@pytest.fixture
def site(baked, postgres, tmp_path):  # noqa: F811
    database, url = postgres.create_database()
    env_file = tmp_path / "app.env"
    env_file.write_text(f"DATABASE_URL={url}\n")
    made = Site(baked, postgres, database, free_port(), tmp_path / "host-state", env_file)
    made.configure()
    yield made
    for front in made.state_dir.glob("*/nginx.conf"):
        subprocess.run(["nginx", "-p", str(front.parent), "-c", str(front), "-s", "quit"], capture_output=True)
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=dev.imagebuild.deploy.port={made.port}"],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


class PeopleLoad:
    """Threads that add people, read each back, and rename some, the whole time: every answer and every row."""

    def __init__(self, site: Site, threads: int = 3):
        self.site = site
        self.failures: list[str] = []
        self.names: dict[int, str] = {}       # what each row must hold at the end
        self.answers = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.site.url(path), data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def _run(self, thread: int) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            name = f"name-{thread}-{count}"
            try:
                person = self._call("POST", "/people", {"name": name})["id"]
                with self._lock:
                    self.names[person] = name
                if count % 4 == 0:
                    name = name + "-renamed"
                    self._call("PUT", f"/people/{person}", {"name": name})
                    with self._lock:
                        self.names[person] = name
                read = self._call("GET", f"/people/{person}")
                if read["name"] != name:
                    raise AssertionError(f"person {person} reads {read['name']!r}, wrote {name!r}")
                with self._lock:
                    self.answers += 1
            except Exception as exc:  # noqa: BLE001 - refused, reset, 500, wrong row: all are failures
                detail = exc.read().decode()[:200] if isinstance(exc, urllib.error.HTTPError) else ""
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc} {detail}")

    def __enter__(self) -> "PeopleLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for(self, more: int) -> None:
        target = self.answers + more
        for _ in range(1200):
            if self.answers >= target:
                return
            time.sleep(0.05)
        raise AssertionError(f"only {self.answers} of {target} answers arrived; failures: {self.failures[:3]}")


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
        # Expand, then the serving v1 proven against it, all before the new container started.
        order = steps(second)
        assert order.index("migrated") < order.index("compatible") < order.index("start") < order.index("switch")
        assert "contract" not in order
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

    # An expand that fails: nothing starts, v1 keeps serving.
    site.configure(expand=["python3", "/app/migrate.py", "expnd"])
    site.promote("v2")
    error = one_error_line(site.deploy(), 6)
    assert "expand migration `python3 /app/migrate.py expnd`" in error and f"{v1} keeps serving" in error
    assert site.record()["v2"] == {**site.record()["v2"], "phases": {}}
    assert site.record()["v2"]["failed"].keys() == {"expand"}

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
