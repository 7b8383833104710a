"""A throwaway PostgreSQL 15 cluster (Debian's binaries) for the tests, one per session.

Debian's server refuses to run as root, so initdb and pg_ctl run as the `postgres` user (runuser) on a
directory of its own. It listens on loopback (the tests) and on the Docker bridge's gateway (the app's
containers: loopback is invisible from a container). Each test gets its own database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
APP_USER, APP_PASSWORD = "app", "app-" + uuid.uuid4().hex[:12]


def as_postgres(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def bridge_gateway() -> str:
    done = subprocess.run(["docker", "network", "inspect", "bridge", "--format",
                           "{{(index .IPAM.Config 0).Gateway}}"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    return done.stdout.strip()


@dataclass
class Postgres:
    directory: Path          # holds data/, the log and the server's socket
    port: int
    gateway: str

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host=str(self.directory), port=self.port, user="postgres", dbname=database,
                               autocommit=True)

    def create_database(self) -> tuple[str, str]:
        """A fresh database owned by the app's role: its name, and the URL a container reaches it by."""
        name = "t" + uuid.uuid4().hex[:10]
        with self.connect() as db:
            db.execute(f'CREATE DATABASE "{name}" OWNER {APP_USER}')
        return name, f"postgresql://{APP_USER}:{APP_PASSWORD}@{self.gateway}:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").is_file():
        pytest.fail("PostgreSQL 15 is missing: scripts/setup-system.sh installs the Debian package postgresql")
    with running_postgres() as server:
        yield server


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A new cluster, started; stopped and removed on the way out."""
    directory = Path(tempfile.mkdtemp(prefix="imagebuild-pg-"))
    os.chmod(directory, 0o755)
    shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    done = as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-sync",
                       "--auth-local=trust", "--auth-host=scram-sha-256")
    assert done.returncode == 0, done.stderr
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write("host all all 0.0.0.0/0 scram-sha-256\n")   # the containers, from the bridge
    server = Postgres(directory, free_port(), bridge_gateway())
    options = (f"-p {server.port} -k {directory} -c listen_addresses='127.0.0.1,{server.gateway}' "
               "-c fsync=off -c synchronous_commit=off -c max_connections=200")
    done = as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"), "-w",
                       "-o", options, "start")
    assert done.returncode == 0, done.stdout + done.stderr + _log(directory)
    try:
        with server.connect() as db:
            db.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
        yield server
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)


def _log(directory: Path) -> str:
    log = directory / "server.log"
    return log.read_text()[-2000:] if log.exists() else ""
