"""Everyday commands of two trees side by side: an earlier commit's and this one, alternating.

For a change to the commands' start-up, on a machine too busy for bench/everyday.py's absolute
figures: both trees run in the same moments, so load hits both alike. Each command runs --runs
times per tree, in turns; the table has the fastest wall time and the median CPU time (user + sys
of the process and its children, steadier than wall time under load). The earlier tree is
`git archive REV imagebuild` in a temporary directory, run by the same interpreter through
PYTHONPATH. A local store of four small images and two recipes (three environments; one without a
registry, one with the loopback registry) are made first; the registry rows need it running.

    python bench/everyday_before_after.py --before d33eefd [--runs 10] [--registry 127.0.0.1:5000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.everyday import RECIPE  # noqa: E402
from imagebuild.stores.layout import LayoutStore  # noqa: E402
from imagebuild.stores.lease import release_lease  # noqa: E402
from tests.registry_support.images import write_app_image  # noqa: E402

CASES = [("local", ["images"]), ("local", ["status"]), ("local", ["history", "dev"]),
         ("local", ["promote", "v2", "--to", "dev", "--dry-run"]), ("registry", ["status"]),
         ("registry", ["history", "dev"]), ("registry", ["promote", "v1", "--to", "dev"]), ("local", ["--help"])]


def once(argv: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall * 1000, (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def prepare(work: Path, registry: str, before: str) -> dict[str, Path]:
    old = work / "before"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", before, "imagebuild", "recipes"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    for tree in (old, REPO):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "imagebuild")], check=True)
    store = LayoutStore(work / "store").ensure()
    for index in range(4):
        write_app_image(store, "hello", f"v{index}", message=f"commit {index}", filler_bytes=1 << 20)
    release_lease(store.root)
    space = f"{registry}/before-after-{uuid.uuid4().hex[:8]}"
    apps = {"local": ("", ""), "registry": (f"registry: {space}/ib\n", f"    registry: {space}/second\n")}
    places = {}
    for name, (registry_line, second) in apps.items():
        places[name] = work / name
        places[name].mkdir()
        (places[name] / "imagebuild.yaml").write_text(RECIPE.format(registry=registry_line, second=second))
    env = {**os.environ, "IMAGEBUILD_STORE": str(store.root), "PYTHONPATH": str(REPO)}
    for name, cwd in places.items():
        if name == "registry":
            subprocess.run([sys.executable, "-m", "imagebuild", "push", "hello:v1"], cwd=cwd, env=env, check=True,
                           capture_output=True)
        for environment in ("dev", "test"):
            subprocess.run([sys.executable, "-m", "imagebuild", "promote", "v1", "--to", environment], cwd=cwd,
                           env=env, check=True, capture_output=True)
    return {"before": old, "after": REPO, "store": store.root, **places}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--registry", default=os.environ.get("IMAGEBUILD_TEST_REGISTRY", "127.0.0.1:5000"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-before-after-"))
    try:
        paths = prepare(work, args.registry, args.before)
        print(f"before = {args.before}, after = this tree; fastest wall / median CPU of {args.runs} runs each")
        print("| command | before | after | `python -c pass` |")
        print("|---|---:|---:|---:|")
        for place, argv in CASES:
            got: dict[str, list] = {"before": [], "after": [], "python": []}
            for _ in range(args.runs):
                for tree in ("before", "after"):
                    env = {**os.environ, "IMAGEBUILD_STORE": str(paths["store"]), "PYTHONPATH": str(paths[tree])}
                    got[tree].append(once([sys.executable, "-m", "imagebuild", *argv], paths[place], env))
                got["python"].append(once([sys.executable, "-c", "pass"], paths[place], dict(os.environ)))

            def cell(runs: list) -> str:
                return f"{min(w for w, _ in runs):.0f} / {statistics.median(c for _, c in runs):.0f} ms"
            print(f"| {' '.join(argv)} ({place}) | {cell(got['before'])} | {cell(got['after'])} | "
                  f"{cell(got['python'])} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
