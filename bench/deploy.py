"""Deploy benchmark: `imagebuild deploy` side by side with the naive stop-then-start, in one run.

Both swap the same two images (baked by imagebuild from a small standard-library
app, pushed to the loopback registry, pulled by digest) back and forth while a
load loop sends requests the whole time: two threads on `/`, one on `/slow`
(one second per request, so a request is always in flight), each request on a
new connection.

  imagebuild   `imagebuild deploy dev` over a real sshd on loopback: blue/green
               behind the host's nginx front, health-gated, drained
  naive        what a shell script does: `docker stop` + `docker rm` the old
               container, `docker run -p PORT:8000` the new one, then poll its
               health path until it answers (the deploy ends when it serves)

For each it reports, per swap and in total: wall time of the deploy, requests
sent, requests failed (refused, reset, or not 200), and the outage: from the
first failed request's start to the last one's end. No migration runs, so both
do the same work apart from the swap itself. The imagebuild time includes
Python start-up, the registry lookup and the SSH connection.

    python bench/deploy.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.debian_fixtures import PYTHON_OS, PYTHON_RUNTIME, _cache_dir, build_cached_base  # noqa: E402
from tests.deploy_support import VARIABLE, LoadLoop, cleanup, epoch, make_deploy_app  # noqa: E402
from tests.ssh_support import SshServers, free_port  # noqa: E402

SETTLE = 20          # answers from the new release before a swap counts as finished


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: docker {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def summarize(name: str, swaps: list[dict]) -> dict:
    return {"tool": name, "swaps": swaps,
            "seconds_mean": round(sum(s["seconds"] for s in swaps) / len(swaps), 2),
            "requests": sum(s["requests"] for s in swaps), "failed": sum(s["failed"] for s in swaps),
            "outage_max_s": max(s["outage_s"] for s in swaps)}


def step_seconds(events: list[dict]) -> dict[str, float]:
    """Seconds each reported step took: from the previous event to its own."""
    steps, previous = {}, None
    for event in events:
        moment = epoch(event["time"])
        if previous is not None:
            steps[event["step"]] = round(steps.get(event["step"], 0) + moment - previous, 2)
        previous = moment
    return steps


def measure(load: LoadLoop, release: str, swap) -> dict:
    before = len(load.responses)
    started = time.monotonic()
    swap()
    seconds = time.monotonic() - started
    load.wait_for(sum(1 for r in load.responses if r.release == release) + SETTLE, release)
    window = load.responses[before:]
    failed = [r for r in window if r.error]
    outage = (max(r.ended for r in failed) - min(r.started for r in failed)) if failed else 0.0
    return {"to": release, "seconds": round(seconds, 2), "requests": len(window), "failed": len(failed),
            "outage_s": round(outage, 2), "errors": sorted({r.error.split(":")[0] for r in failed})}


def bench_imagebuild(app, rounds: int) -> dict:
    swaps = []
    with LoadLoop(app.url()) as load:
        load.wait_for(10, "v1")
        for index in range(rounds):
            release = "v2" if index % 2 == 0 else "v1"
            app.promote(release)

            done = None

            def swap():
                nonlocal done
                done = app.deploy()
                if done.returncode != 0:
                    sys.exit(f"bench: imagebuild deploy failed:\n{done.stderr}")
            figures = measure(load, release, swap)
            figures["steps"] = step_seconds(json.loads(done.stdout)["events"])
            swaps.append(figures)
    return summarize("imagebuild deploy (blue/green behind nginx)", swaps)


def bench_naive(app, references: dict[str, str], rounds: int) -> dict:
    port = free_port()
    name = f"{app.name}-naive"
    labels = ["--label", f"dev.imagebuild.deploy.app={app.name}"]   # removed by cleanup() with the rest

    def start(release: str) -> None:
        docker("pull", "--quiet", references[release])
        docker("run", "--detach", "--name", name, *labels, "--env", f"{VARIABLE}=dev",
               "--publish", f"127.0.0.1:{port}:8000",
               references[release])
        last = None
        for _ in range(1200):  # bounded: the health path answers within seconds
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        log = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        sys.exit(f"bench: the naive container never answered its health path ({last}); "
                 f"its log:\n{log.stdout}{log.stderr}")

    start("v1")
    swaps = []
    with LoadLoop(f"http://127.0.0.1:{port}") as load:
        load.wait_for(10, "v1")
        for index in range(rounds):
            release = "v2" if index % 2 == 0 else "v1"

            def swap():
                docker("stop", "--time", "10", name)
                docker("rm", name)
                start(release)
            swaps.append(measure(load, release, swap))
    docker("rm", "--force", name)
    return summarize("naive stop-then-start (docker stop; docker run)", swaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="swaps per tool (alternating v1 -> v2 -> v1 ...)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    servers = SshServers(work / "sshd")
    app = None
    try:
        server = servers.start()
        base = build_cached_base(_cache_dir(PYTHON_OS, PYTHON_RUNTIME), PYTHON_OS, PYTHON_RUNTIME)
        app = make_deploy_app(work / "app", base, [server], [free_port()], migrate=False, drain=30)
        app.release("v1")
        app.release("v2")
        app.promote("v1")
        first = app.deploy()
        if first.returncode != 0:
            sys.exit(f"bench: the first deploy failed:\n{first.stderr}")
        references = {release: app.reference(release) for release in ("v1", "v2")}
        results = [bench_imagebuild(app, args.rounds), bench_naive(app, references, args.rounds)]
    finally:
        if app is not None:
            cleanup(app)
        servers.close()

    if args.json:
        print(json.dumps({"rounds": args.rounds, "results": results}, indent=2))
        return
    print(f"{'tool':<50} {'deploy s (mean)':>15} {'requests':>9} {'failed':>7} {'max outage s':>13}")
    for row in results:
        print(f"{row['tool']:<50} {row['seconds_mean']:>15} {row['requests']:>9} {row['failed']:>7} "
              f"{row['outage_max_s']:>13}")
    for row in results:
        print(f"\n{row['tool']}")
        for swap in row["swaps"]:
            errors = f"  ({', '.join(swap['errors'])})" if swap["errors"] else ""
            print(f"  -> {swap['to']}: {swap['seconds']} s, {swap['requests']} requests, {swap['failed']} failed, "
                  f"outage {swap['outage_s']} s{errors}")
            if swap.get("steps"):
                print("     steps: " + ", ".join(f"{step} {seconds} s" for step, seconds in swap["steps"].items()))


if __name__ == "__main__":
    main()
