"""examples/flask-surname baked as v1, v2 and a broken v2, deployed against a real PostgreSQL, and a load
loop that reads and writes: shared by tests/test_deploy_migrations.py and bench/migrations.py.

v1 reads and writes people.surname, v2 (the example as committed) people.last_name, and `broken` is v2
plus an expand file that renames surname, which v1 cannot survive.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.bake_support import FIRST_COMMIT_TIME, commit_all, example_repo, seed
from tests.conftest import REGISTRY, imagebuild
from tests.debian_fixtures import DebianBase
from tests.deploy_support import LoadThreads, remove_containers, remove_images, stop_fronts
from tests.postgres_support import Postgres
from tests.ssh_support import SshServer, free_port, write_known_hosts

EXPAND = ["python3", "/app/migrate.py", "expand"]
CONTRACT = ["python3", "/app/migrate.py", "contract"]
PAUSE = 0.02         # seconds between one load thread's rounds: steady load that leaves a shared machine some CPU
BREAKING_EXPAND = "ALTER TABLE people RENAME COLUMN surname TO family_name;\n"


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


def bake_surname(directory: Path, base: DebianBase, server: SshServer) -> Baked:
    """examples/flask-surname in a git repository of its own, baked and pushed as v1, v2 and broken."""
    repo = example_repo(directory, "flask-surname", lock=base.lock_path)
    tag = uuid.uuid4().hex[:8]
    recipe = yaml.safe_load((repo / "imagebuild.yaml").read_text())
    recipe["registry"] = f"{REGISTRY}/deploytest-{tag}"
    (repo / "imagebuild.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    commit_all(repo, "v2", FIRST_COMMIT_TIME + 60)
    made = Baked(repo, directory / "store", recipe["registry"], write_known_hosts(directory / "known_hosts", server),
                 server.client_key, server.url)
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

    # broken: v2 plus an expand file that renames the column v1 reads; unlinted (no sql:), or bake would
    # refuse it.
    for path, text in v2_files.items():
        path.write_text(text)
    (repo / "migrations/expand/003_family_name.sql").write_text(BREAKING_EXPAND)
    unlinted = {**recipe, "deploy": {**recipe["deploy"],
                                     "migrations": {k: v for k, v in recipe["deploy"]["migrations"].items()
                                                    if k != "sql"}}}
    (repo / "imagebuild.yaml").write_text(yaml.safe_dump(unlinted, sort_keys=False))
    commit_all(repo, "broken", FIRST_COMMIT_TIME + 120)
    bake_push(made, "broken")

    # The checkout deploys run from: v2's files (deploy lints them).
    (repo / "migrations/expand/003_family_name.sql").unlink()
    (repo / "imagebuild.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    commit_all(repo, "v2 again", FIRST_COMMIT_TIME + 180)
    return made


def remove_baked_images(made: Baked) -> None:
    remove_images(f"{made.registry}/flask-surname")


@dataclass
class Site:
    """One environment of the app for one test: its own database, public port, host state and env file."""

    baked: Baked
    db: Postgres
    database: str
    port: int
    state_dir: Path
    env_file: Path

    def configure(self, smoke: list[str] | None = None, **migrations) -> None:
        """The recipe's deploy section for the next command (the images do not change)."""
        recipe = yaml.safe_load((self.baked.repo / "imagebuild.yaml").read_text())
        recipe["environments"][0]["hosts"] = [f"{self.baked.server_url}?port={self.port}"]
        recipe["deploy"] = {
            "listen": "127.0.0.1", "port": self.port, "drain": 2, "health_timeout": 60,
            "state_dir": str(self.state_dir), "env_file": str(self.env_file),
            "smoke": smoke or ["python3", "/app/smoke.py"],
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


def make_site(baked: Baked, db: Postgres, directory: Path) -> Site:
    """A fresh database, a free public port and a host state directory under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    database, url = db.create_database()
    env_file = directory / "app.env"
    env_file.write_text(f"DATABASE_URL={url}\n")
    made = Site(baked, db, database, free_port(), directory / "host-state", env_file)
    made.configure()
    return made


def remove_site(made: Site) -> None:
    """Stop its front and remove its containers."""
    stop_fronts(made.state_dir)
    remove_containers(f"dev.imagebuild.deploy.port={made.port}")


class PeopleLoad(LoadThreads):
    """Threads that add people, read each back, and rename some, the whole time: every answer and every row."""

    def __init__(self, site: Site, threads: int = 3):
        self.site = site
        self.failures: list[str] = []
        self.names: dict[int, str] = {}       # what each row must hold at the end
        self.answers = 0
        super().__init__(range(threads))

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
                time.sleep(PAUSE)
            except Exception as exc:  # noqa: BLE001 - refused, reset, 500, wrong row: all are failures
                detail = exc.read().decode()[:200] if isinstance(exc, urllib.error.HTTPError) else ""
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc} {detail}")

    def wait_for(self, more: int) -> None:
        target = self.answers + more
        for _ in range(1200):
            if self.answers >= target:
                return
            time.sleep(0.05)
        raise AssertionError(f"only {self.answers} of {target} answers arrived; failures: {self.failures[:3]}")
