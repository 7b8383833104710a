"""`imagebuild lock` with nothing changed and with one requirement changed, side by side with pip.

On a temporary git copy of examples/flask-hello, with the indexes cached (one untimed
warm-up run first), it times, as the median of --runs runs:

  nothing changed        `imagebuild lock` on a fresh lock: nothing to resolve
  one requirement        werkzeug moved to another release (its hash with it) in
                         requirements.txt: pip resolves the closure, the Debian pins are kept
  one Debian package     (with --debian) `less` added to os.packages: the Debian packages are
                         resolved afresh (mmdebstrap, root only), the Python closure is kept

Each run is a real `imagebuild lock` process, run by tests/process_recorder.py, which
notes every process it starts and how long each ran, so the report says where
the time goes: Python (start-up, imports, imagebuild's own work) and each subprocess. The
CPU time is that of imagebuild and its children. Beside the requirement case stands the
peer: pip's own resolver run by hand on the same requirements (`pip install --dry-run
--report` with the image's Python and platforms, which is what `lock` asks pip for, and
`pip lock` for the host, pip's lock-file writer). Goal: 5 s or less for each case.

    python bench/lock.py [--runs 3] [--debian [--debian-runs 1]] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "flask-hello"
GOAL_SECONDS = 5.0
# werkzeug 3.1.8, the release before the example's: a bump of one pinned requirement.
OLD_WERKZEUG = ("werkzeug==3.1.8", "63a77fb8892bf28ebc3178683445222aa500e48ebad5ec77b0ad80f8726b1f50")
EXTRA_DEBIAN_PACKAGE = "less"

def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
                   cwd=repo, check=True, capture_output=True)


def make_app(into: Path) -> Path:
    app = into / "flask-hello"
    shutil.copytree(EXAMPLE, app)
    git(app, "init", "-q")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "first")
    return app


def restore(app: Path) -> None:
    """Back to the committed recipe, requirements and lock."""
    git(app, "checkout", "-q", "--", ".")


def bump_requirement(app: Path) -> None:
    requirements = app / "requirements.txt"
    lines = requirements.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("werkzeug=="):
            lines[number] = OLD_WERKZEUG[0] + " \\"
            lines[number + 1] = f"    --hash=sha256:{OLD_WERKZEUG[1]}"
            break
    else:
        sys.exit("bench: examples/flask-hello/requirements.txt no longer pins werkzeug")
    requirements.write_text("\n".join(lines) + "\n")


def add_debian_package(app: Path) -> None:
    recipe = app / "imagebuild.yaml"
    text = recipe.read_text()
    if "packages: [ca-certificates]" not in text:
        sys.exit("bench: examples/flask-hello/imagebuild.yaml no longer lists os.packages as expected")
    recipe.write_text(text.replace("packages: [ca-certificates]",
                                   f"packages: [ca-certificates, {EXTRA_DEBIAN_PACKAGE}]"))


def lock(app: Path, work: Path) -> dict:
    """One `imagebuild lock` process: its wall time and the runner's record."""
    record = work / "record.json"
    record.unlink(missing_ok=True)
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tests.process_recorder", str(record), "lock", str(app)],
                          capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - begin
    if done.returncode != 0:
        sys.exit(f"bench: imagebuild lock failed (exit {done.returncode}):\n{done.stderr}")
    data = json.loads(record.read_text())
    data["wall"] = wall
    data["output"] = done.stdout.strip()
    return data


def peers(app: Path, work: Path) -> dict[str, float]:
    """pip's resolver by hand on the same (bumped) requirements: what `lock` asks pip for, and `pip lock`."""
    sys.path.insert(0, str(REPO))
    from imagebuild.build.layers.libraries import pip_platforms
    from imagebuild.recipe.loader import load_recipe

    recipe = load_recipe(app)
    requirements = str(app / "requirements.txt")
    dry_run = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--dry-run",
               "--ignore-installed", "--report", str(work / "report.json"), "--target", str(work / "target"),
               "--python-version", str(recipe.runtime.python), "--implementation", "cp", "--only-binary=:all:"]
    for platform in pip_platforms(recipe):
        dry_run += ["--platform", platform]
    commands = {"pip install --dry-run --report": dry_run + ["-r", requirements],
                "pip lock (host platform)": [sys.executable, "-m", "pip", "lock", "--quiet",
                                             "--disable-pip-version-check", "--only-binary=:all:",
                                             "-o", str(work / "pylock.toml"), "-r", requirements]}
    times = {}
    for name, command in commands.items():
        begin = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times[name] = time.perf_counter() - begin
        if done.returncode != 0:
            print(f"bench: {name} failed, left out: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            del times[name]
    return times


def summary(runs: list[dict]) -> dict:
    """Medians over the runs, the subprocesses' time by program."""
    programs: dict[str, list[float]] = {}
    for run in runs:
        spent: dict[str, float] = {}
        for name, seconds in run["timed"]:
            spent[name] = spent.get(name, 0.0) + seconds
        for name in spent:
            programs.setdefault(name, [])
        for name in programs:
            programs[name].append(spent.get(name, 0.0))
    walls = [run["wall"] for run in runs]
    sub = {name: statistics.median(values) for name, values in programs.items()}
    wall = statistics.median(walls)
    return {"wall": wall, "min": min(walls), "max": max(walls),
            "cpu": statistics.median(run["cpu_self"] + run["cpu_children"] for run in runs),
            "subprocesses": sub, "python": max(0.0, wall - sum(sub.values())),
            "started": sorted({started[0] for run in runs for started in run["started"]}),
            "goal_met": wall <= GOAL_SECONDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--debian", action="store_true", help="also time one Debian package added (root, mmdebstrap)")
    parser.add_argument("--debian-runs", type=int, default=1, help="runs of the Debian case (each about a minute)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    # as installing a wheel does: where PYTHONDONTWRITEBYTECODE is set, an editable checkout
    # would compile every module it imports again on each run
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "imagebuild")], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as tmp:
        work = Path(tmp)
        app = make_app(work)
        # Untimed warm-up: the committed lock is fresh, and pip's caches have seen the requirement case.
        lock(app, work)
        bump_requirement(app)
        lock(app, work)
        restore(app)
        cases: list[tuple[str, Callable[[], None]]] = [("nothing changed", lambda: None),
                                             ("one requirement changed", lambda: bump_requirement(app))]
        if args.debian:
            # warms the Debian index cache (and the .deb downloads it keeps) untimed
            add_debian_package(app)
            lock(app, work)
            restore(app)
            cases.append(("one Debian package added", lambda: add_debian_package(app)))
        for name, change in cases:
            runs = []
            for _ in range(args.debian_runs if name == "one Debian package added" else args.runs):
                restore(app)
                change()
                runs.append(lock(app, work))
            results[name] = summary(runs)
        restore(app)
        bump_requirement(app)
        peer_times = peers(app, work)
    if args.json:
        print(json.dumps({"cases": results, "peers": peer_times, "goal_seconds": GOAL_SECONDS,
                          "load_average": os.getloadavg()}, indent=2))
        return
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"imagebuild lock on examples/flask-hello (median of {args.runs}; goal <= {GOAL_SECONDS:.0f} s; "
          f"load average {load})")
    for name, result in results.items():
        verdict = "met" if result["goal_met"] else "MISSED"
        where = ", ".join(f"{program} {seconds:.2f} s" for program, seconds in result["subprocesses"].items())
        print(f"  {name:26} {result['wall']:6.2f} s  (min {result['min']:.2f}, max {result['max']:.2f}; "
              f"CPU {result['cpu']:.2f} s)  goal {verdict}")
        print(f"  {'':26} Python {result['python']:.2f} s; subprocesses: {where or 'none'}")
    for name, seconds in peer_times.items():
        print(f"  peer: {name:35} {seconds:6.2f} s  (the same requirements, one run)")


if __name__ == "__main__":
    main()
