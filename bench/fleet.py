"""Fleet deploy benchmark: four hosts swapped two at a time (`deploy.batch: 2`) against one at a time, in one run.

Four real sshd on loopback, each with its own public port, nginx front and
instance, the machine's Docker engine behind them all (as in the deploy
tests). The same two images (a small standard-library app, baked by
imagebuild and pushed to the loopback registry) are swapped back and forth:
v1 -> v2 with one batch size, then v2 -> v1 with the other, alternating, while
a load loop sends a steady `--rate` of requests per second to every host's
front (each on a new connection). Both modes are timed the same way: the wall
time of the whole `imagebuild deploy` process, split with the deploy's own
event timestamps into

  start-up  Python start-up, recipe and registry lookup, up to the first event;
  prepare   every host connected, locked, checked and read (all hosts at once);
  waves     the first wave's start to the last host's `done`: the swaps;
  rest      the record, the summary and the process's exit.

The ideal ratio is hosts / batch = 2 for the waves: every host's swap waits
about the same fixed times (the health gate, the drain), which is what waves
overlap; start-up and prepare are the same in both modes. Each mode also
gets each host's mean time per step, the CPU time the deploy process used,
and the CPU time the whole machine used meanwhile (from /proc/stat, so other
people's work on a shared machine counts too: the load averages are printed).

    python bench/fleet.py [--rounds 2] [--rate 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.debian_fixtures import PYTHON_OS, PYTHON_RUNTIME, _cache_dir, build_cached_base  # noqa: E402
from tests.deploy_support import LoadLoop, cleanup, epoch, make_deploy_app  # noqa: E402
from tests.ssh_support import SshServers, free_port  # noqa: E402

HOSTS = 4
DEFAULT_RATE = 50.0         # requests per second per host: steady traffic, not a saturating loop
PHASES = ("start-up", "prepare", "waves", "rest")
# A host's swap, from its wave's start: each step's time runs from the previous event to this one.
STEPS = (("pull", "state + pull"), ("start", "docker run"), ("healthy", "health gate"),
         ("reload", "config + nginx -t"), ("switch", "reload + drain"), ("stop", "stop + rm"))


def set_batch(app, batch: int) -> None:
    """deploy.batch in the recipe the deploy reads (the images are baked already)."""
    recipe = yaml.safe_load(app.recipe.read_text())
    recipe["deploy"]["batch"] = batch
    app.recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine has used (user, nice, system, irq, softirq, steal), in seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def phases_of(events: list[dict], started: float, ended: float) -> dict[str, float]:
    """The deploy's wall time cut at its first event, its first wave and its last host's `done`."""
    times = [epoch(e["time"]) for e in events]
    wave = min(epoch(e["time"]) for e in events if e["step"] == "wave")
    done = max(epoch(e["time"]) for e in events if e["step"] == "done")
    return {"start-up": min(times) - started, "prepare": wave - min(times), "waves": done - wave,
            "rest": ended - done}


def steps_of(events: list[dict]) -> dict[str, list[float]]:
    """Each host's time per step, from the start of the wave it was in."""
    found: dict[str, list[float]] = {step: [] for step, _ in STEPS}
    wave_start = None
    last: dict[str, float] = {}
    for event in events:
        at = epoch(event["time"])
        if event["step"] == "wave":
            wave_start = at
            for host in event["message"].split(": ", 1)[1].split(", "):
                last[host] = at
        elif event["step"] in found and wave_start is not None and event["host"] in last:
            found[event["step"]].append(at - last[event["host"]])
            last[event["host"]] = at
    return found


def swap(app, loads: list[LoadLoop], release: str, batch: int) -> dict:
    set_batch(app, batch)
    app.promote(release)
    before = [len(load.responses) for load in loads]
    load_before = os.getloadavg()[0]
    cpu_before, machine_before = children_cpu_seconds(), machine_cpu_seconds()
    started = time.time()
    done = app.deploy()
    ended = time.time()
    cpu, machine = children_cpu_seconds() - cpu_before, machine_cpu_seconds() - machine_before
    if done.returncode != 0:
        sys.exit(f"bench: imagebuild deploy failed:\n{done.stderr}")
    events = json.loads(done.stdout)["events"]
    for load in loads:
        load.wait_for(sum(1 for r in load.responses if r.release == release) + 5, release)
    window = [r for load, start in zip(loads, before) for r in load.responses[start:]]
    return {"batch": batch, "to": release, "seconds": round(ended - started, 2),
            "phases": {k: round(v, 2) for k, v in phases_of(events, started, ended).items()},
            "steps": {k: [round(v, 2) for v in vs] for k, vs in steps_of(events).items()},
            "deploy_cpu_seconds": round(cpu, 2), "machine_cpu_seconds": round(machine, 2),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "requests": len(window), "failed": sum(1 for r in window if r.error)}


def summarise(swaps: list[dict]) -> dict:
    def mean(values):
        return round(statistics.fmean(values), 2)

    summary = {}
    for batch in (2, 1):
        mine = [s for s in swaps if s["batch"] == batch]
        summary[batch] = {
            "seconds_mean": mean([s["seconds"] for s in mine]),
            "phases_mean": {phase: mean([s["phases"][phase] for s in mine]) for phase in PHASES},
            "steps_mean": {step: mean([v for s in mine for v in s["steps"][step]]) for step, _ in STEPS},
            "deploy_cpu_seconds_mean": mean([s["deploy_cpu_seconds"] for s in mine]),
            "machine_cpu_seconds_mean": mean([s["machine_cpu_seconds"] for s in mine]),
            "requests": sum(s["requests"] for s in mine), "failed": sum(s["failed"] for s in mine)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="deploys per batch size (alternating with the other)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help=f"requests per second sent to each host's front (default {DEFAULT_RATE:g}); "
                             "0: back to back, as fast as they are answered")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    if args.rounds < 1 or args.rate < 0:
        parser.error("--rounds must be at least 1 and --rate not negative")

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    servers = SshServers(work / "sshd")
    app = None
    swaps = []
    load_start = os.getloadavg()
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
        loads = [LoadLoop(app.url(index), paths=("/",), rate=args.rate or None) for index in range(HOSTS)]
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
    load_end = os.getloadavg()

    summary = summarise(swaps)
    ratio = round(summary[1]["seconds_mean"] / summary[2]["seconds_mean"], 2)
    waves_ratio = round(summary[1]["phases_mean"]["waves"] / summary[2]["phases_mean"]["waves"], 2)
    rate = f"{args.rate:g} requests/s per host" if args.rate else "back to back (unpaced)"
    if args.json:
        print(json.dumps({"hosts": HOSTS, "rounds": args.rounds, "rate_per_host": args.rate or None,
                          "cpus": os.cpu_count(), "load_average": {"start": load_start, "end": load_end},
                          "swaps": swaps, "summary": {str(k): v for k, v in summary.items()},
                          "speedup": ratio, "speedup_waves": waves_ratio}, indent=2))
        return
    print(f"{HOSTS} hosts, {args.rounds} deploy(s) per batch size, load: {rate}; {os.cpu_count()} CPUs, "
          f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at the start, "
          f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end")
    print(f"{'batch':<14} {'deploy s':>8} " + " ".join(f"{p:>8}" for p in PHASES)
          + f" {'CPU s':>6} {'machine':>8} {'requests':>9} {'failed':>7}")
    for batch, label in ((2, "2 at a time"), (1, "one at a time")):
        row = summary[batch]
        print(f"{label:<14} {row['seconds_mean']:>8} " + " ".join(f"{row['phases_mean'][p]:>8}" for p in PHASES)
              + f" {row['deploy_cpu_seconds_mean']:>6} {row['machine_cpu_seconds_mean']:>8}"
              + f" {row['requests']:>9} {row['failed']:>7}")
    print(f"one at a time / 2 at a time: {ratio}x for the whole deploy, {waves_ratio}x for the waves "
          f"(ideal: hosts / batch = {HOSTS // 2}x)")
    print("mean seconds per host and step (from the previous event):")
    print(f"  {'batch':<14} " + " ".join(f"{label:>17}" for _, label in STEPS))
    for batch, label in ((2, "2 at a time"), (1, "one at a time")):
        print(f"  {label:<14} " + " ".join(f"{summary[batch]['steps_mean'][step]:>17}" for step, _ in STEPS))
    for one in swaps:
        phases = ", ".join(f"{k} {v}" for k, v in one["phases"].items())
        print(f"  batch {one['batch']} -> {one['to']}: {one['seconds']} s ({phases}); CPU {one['deploy_cpu_seconds']} s "
              f"(machine {one['machine_cpu_seconds']} s), load {one['load_average'][0]} -> {one['load_average'][1]}; "
              f"{one['requests']} requests, {one['failed']} failed")


if __name__ == "__main__":
    main()
