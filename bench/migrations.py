"""Migrations benchmark: examples/flask-surname v1 -> v2 (expand, the v1 check, swap, contract) under load.

Each round gets a fresh database on a throwaway PostgreSQL 15 cluster, deploys v1 (not measured), then
starts three threads that add people, read each back and rename some, each request on a new connection,
and deploys v2 with `contract_when: after-swap` over a real sshd on loopback. It reports, per round: the
deploy's wall time (Python start-up, the registry lookup and SSH included), how long each step took, the
requests answered, the failed ones (refused, reset, not 2xx, or a read that did not return what was written)
and the rows lost or wrong at the end, read from the database.

    python bench/migrations.py [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploy import step_seconds  # noqa: E402  (bench/deploy.py, beside this file)
from imagebuild.recipe.loader import load_recipe  # noqa: E402
from tests.debian_fixtures import _cache_dir, build_cached_base  # noqa: E402
from tests.migrations_support import PeopleLoad, bake_surname, make_site, remove_baked_images, remove_site  # noqa: E402
from tests.postgres_support import running_postgres  # noqa: E402
from tests.ssh_support import SshServers  # noqa: E402

SETTLE = 30          # answers before and after the deploy


def one_round(site) -> dict:
    site.promote("v1")
    site.deployed()
    with PeopleLoad(site) as load:
        load.wait_for(SETTLE)
        site.promote("v2")
        started = time.monotonic()
        result = site.deployed()
        seconds = time.monotonic() - started
        load.wait_for(SETTLE)
    with site.db.connect(site.database) as db:
        rows = dict(db.execute("SELECT id, last_name FROM people").fetchall())
    wrong = sum(1 for person, name in load.names.items() if rows.get(person) != name)
    return {"seconds": round(seconds, 2), "steps": step_seconds(result["events"]), "requests": load.answers,
            "failed": len(load.failures), "rows": len(load.names), "rows_lost_or_wrong": wrong,
            "failures": load.failures[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="v1 -> v2 deploys, each on a fresh database")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-migrations-"))
    servers = SshServers(work / "sshd")
    baked, rounds = None, []
    try:
        server = servers.start()
        recipe = load_recipe(REPO / "examples" / "flask-surname")
        base = build_cached_base(_cache_dir(recipe.os, recipe.runtime), recipe.os, recipe.runtime)
        baked = bake_surname(work / "app", base, server)
        with running_postgres() as db:
            for number in range(args.rounds):
                site = make_site(baked, db, work / f"round-{number}")
                try:
                    rounds.append(one_round(site))
                finally:
                    remove_site(site)
    finally:
        if baked is not None:
            remove_baked_images(baked)
        servers.close()

    if args.json:
        print(json.dumps({"rounds": rounds}, indent=2))
        return
    print(f"{'round':<6} {'deploy s':>9} {'requests':>9} {'failed':>7} {'rows':>6} {'lost/wrong':>11}")
    for number, row in enumerate(rounds, 1):
        print(f"{number:<6} {row['seconds']:>9} {row['requests']:>9} {row['failed']:>7} {row['rows']:>6} "
              f"{row['rows_lost_or_wrong']:>11}")
        print("       steps: " + ", ".join(f"{step} {seconds} s" for step, seconds in row["steps"].items()))


if __name__ == "__main__":
    main()
