"""Fleet deploy benchmark: four hosts swapped two at a time (`deploy.batch: 2`) against one at a time, in one run.

Four real sshd on loopback, each with its own public port, nginx front and
instance, the machine's Docker engine behind them all (as in the deploy
tests). The same two images (a small standard-library app, baked by
imagebuild and pushed to the loopback registry) are swapped back and forth:
v1 -> v2 with one batch size, then v2 -> v1 with the other, alternating, while
a load loop sends requests to every host's front. Reported per batch size:
the wall time of `imagebuild deploy` (Python start-up, registry lookup, SSH
handshakes included), requests sent and failed. The ideal ratio is
hosts / batch = 2; every host's swap waits about the same fixed times (the
health gate, the drain), which is what waves overlap.

    python bench/fleet.py [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.debian_fixtures import PYTHON_OS, PYTHON_RUNTIME, _cache_dir, build_cached_base  # noqa: E402
from tests.deploy_support import LoadLoop, cleanup, make_deploy_app  # noqa: E402
from tests.ssh_support import SshServers, free_port  # noqa: E402

HOSTS = 4


def set_batch(app, batch: int) -> None:
    """deploy.batch in the recipe the deploy reads (the images are baked already)."""
    recipe = yaml.safe_load(app.recipe.read_text())
    recipe["deploy"]["batch"] = batch
    app.recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))


def swap(app, loads: list[LoadLoop], release: str, batch: int) -> dict:
    set_batch(app, batch)
    app.promote(release)
    before = [len(load.responses) for load in loads]
    started = time.monotonic()
    done = app.deploy()
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"bench: imagebuild deploy failed:\n{done.stderr}")
    for load in loads:
        load.wait_for(sum(1 for r in load.responses if r.release == release) + 5, release)
    window = [r for load, start in zip(loads, before) for r in load.responses[start:]]
    return {"batch": batch, "to": release, "seconds": round(seconds, 2), "requests": len(window),
            "failed": sum(1 for r in window if r.error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="deploys per batch size (alternating with the other)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    servers = SshServers(work / "sshd")
    app = None
    swaps = []
    try:
        hosts = [servers.start() for _ in range(HOSTS)]
        base = build_cached_base(_cache_dir(PYTHON_OS, PYTHON_RUNTIME), PYTHON_OS, PYTHON_RUNTIME)
        app = make_deploy_app(work / "app", base, hosts, [free_port() for _ in range(HOSTS)], migrate=False)
        app.release("v1")
        app.release("v2")
        set_batch(app, HOSTS)
        app.promote("v1")
        first = app.deploy()
        if first.returncode != 0:
            sys.exit(f"bench: the first deploy failed:\n{first.stderr}")
        loads = [LoadLoop(app.url(index), paths=("/",)) for index in range(HOSTS)]
        for load in loads:
            load.__enter__()
        try:
            release = "v1"
            for _ in range(args.rounds):
                for batch in (2, 1):
                    release = "v2" if release == "v1" else "v1"
                    swaps.append(swap(app, loads, release, batch))
        finally:
            for load in loads:
                load.__exit__(None, None, None)
    finally:
        if app is not None:
            cleanup(app)
        servers.close()

    summary = {}
    for batch in (2, 1):
        mine = [s for s in swaps if s["batch"] == batch]
        summary[batch] = {"seconds_mean": round(sum(s["seconds"] for s in mine) / len(mine), 2),
                          "requests": sum(s["requests"] for s in mine), "failed": sum(s["failed"] for s in mine)}
    ratio = round(summary[1]["seconds_mean"] / summary[2]["seconds_mean"], 2)
    if args.json:
        print(json.dumps({"hosts": HOSTS, "rounds": args.rounds, "swaps": swaps,
                          "summary": {str(k): v for k, v in summary.items()}, "speedup": ratio}, indent=2))
        return
    print(f"{HOSTS} hosts, {args.rounds} deploy(s) per batch size")
    print(f"{'batch':<22} {'deploy s (mean)':>15} {'requests':>9} {'failed':>7}")
    for batch, label in ((2, "2 at a time"), (1, "one at a time")):
        row = summary[batch]
        print(f"{label:<22} {row['seconds_mean']:>15} {row['requests']:>9} {row['failed']:>7}")
    print(f"one at a time / 2 at a time: {ratio}x (ideal: hosts / batch = {HOSTS // 2}x)")
    for one in swaps:
        print(f"  batch {one['batch']} -> {one['to']}: {one['seconds']} s, {one['requests']} requests, "
              f"{one['failed']} failed")


if __name__ == "__main__":
    main()
