"""Cold-runner benchmark: a CI runner with an empty store and home bakes and pushes an app-only commit.

In one run, on a temporary git copy of examples/flask-hello pushing to the local
registry (127.0.0.1:5000) through a loopback counting proxy:

  cold      `imagebuild bake --push` of the first commit into an empty store with
            an empty home and nothing in the registry (today's cold bake: the os
            and runtime layers from Debian packages, the libraries from PyPI);
            it leaves the image and its layer cache entries in the registry
  runner    after a commit that changes only hello.py: `imagebuild bake --push`
            into another empty store and home (a fresh CI runner)
  docker    the Docker path on the same commits: the previous image and its base
            pushed beforehand (untimed) and removed from the engine, then
            `docker pull` of the previous image, `docker build --cache-from` it,
            `docker push` (classic builder; the engine's image store has none of it)
  health    both images pushed by the runner step are started and must answer /health

For each: seconds, bytes down and up through the proxy, and the digests (the
runner's must equal a warm local bake of its commit).

    python bench/cold_runner.py [--json]

Needs root (mmdebstrap), docker, umoci, the registry and the Debian mirror/PyPI
for the cold bake. Cleans up its containers, images and temporary directories.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bake import APP_DOCKERFILE, BAKE_TIMEOUT, BASE_DOCKERFILE, Bench, Failed, docker, git, progress, run  # noqa: E402
from tests.registry_support.proxy import FaultProxy  # noqa: E402

REGISTRY = "127.0.0.1:5000"


class ColdRunner(Bench):
    def __init__(self, work: Path, proxy: FaultProxy):
        super().__init__(work)
        self.proxy = proxy
        self.name = f"bench-{uuid.uuid4().hex[:8]}/flask-hello"

    def point_at_registry(self) -> None:
        recipe = self.app / "imagebuild.yaml"
        recipe.write_text(recipe.read_text().replace("name: flask-hello",
                                                     f"name: {self.name}\nregistry: {self.proxy.address}"))
        git(self.app, "commit", "-q", "-am", "push to the bench registry")

    def runner_bake(self, label: str, *args: str) -> tuple[float, dict, int, int]:
        """`bake --json ARGS` with an empty store and home; (seconds, result, bytes down, bytes up)."""
        home = self.work / f"home-{label}"
        env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "CI": "1"}
        self.proxy.log.clear()
        seconds, out = run([*self.cli, "bake", str(self.app), "--store", str(self.work / f"store-{label}"),
                            "--json", *args], BAKE_TIMEOUT, env=env, log=self.log)
        return seconds, json.loads(out), self.proxy.log.bytes_received, self.proxy.log.bytes_sent

    def app_only_commit(self) -> None:
        hello = self.app / "hello.py"
        hello.write_text(hello.read_text().replace("Hello", "Hello again", 1))
        git(self.app, "commit", "-q", "-am", "app only")

    def measure(self) -> dict:
        r = self.results
        self.prepare_app()
        self.point_at_registry()

        progress("imagebuild: cold bake --push, empty store and home, nothing in the registry")
        r["cold"], first, r["cold_down"], r["cold_up"] = self.runner_bake("cold", "--push")

        progress("docker: the previous image and its base in the registry (untimed), then removed from the engine")
        debian_layers = sum(1 for layer in first["layers"] if layer["name"] in ("os", "runtime"))
        base_dir = self.work / "docker-base"
        self.base_rootfs(self.work / "store-cold", first["image"].split("/", 1)[1], debian_layers, base_dir)
        base = f"{self.proxy.address}/{self.name}-docker-base:latest"
        self.docker_build(BASE_DOCKERFILE, base_dir, base, no_cache=True)
        shutil.rmtree(base_dir)
        docker("push", base, timeout=600)
        context, r["docker_pip"] = self.docker_context()
        previous = f"{self.proxy.address}/{self.name}-docker:1"
        self.docker_build(APP_DOCKERFILE, context, previous, no_cache=True, base=base)
        docker("push", previous, timeout=600)
        docker("rmi", "-f", previous, base, timeout=120)

        self.app_only_commit()
        self.refresh_app_context(context)

        progress("imagebuild: a fresh runner bakes and pushes the app-only commit")
        r["runner"], second, r["runner_down"], r["runner_up"] = self.runner_bake("runner", "--push")
        r["runner_built"] = [layer["name"] for layer in second["layers"] if not layer["cached"]]
        progress("imagebuild: a warm local bake of the same commit (the digest to match)")
        _, warm = self.bake(self.work / "store-cold")
        r["digests"] = {"runner": second["digest"], "warm": warm["digest"]}

        progress("docker: pull the previous image, build --cache-from it, push")
        current = f"{self.proxy.address}/{self.name}-docker:2"
        self.images += [previous, base, current]
        self.proxy.log.clear()
        started = time.perf_counter()
        docker("pull", previous, timeout=600)
        run(["docker", "build", "-q", "-f", str(APP_DOCKERFILE), "--cache-from", previous,
             "--build-arg", f"BASE={base}", "-t", current, str(context)], 900,
            env={"DOCKER_BUILDKIT": "0"}, log=self.log)
        docker("push", current, timeout=600)
        r["docker"] = time.perf_counter() - started
        r["docker_down"], r["docker_up"] = self.proxy.log.bytes_received, self.proxy.log.bytes_sent

        progress("both pushed images: start, /health")
        pulled = f"{self.proxy.address}/{self.name}:{second['version']}"
        docker("pull", pulled, timeout=600)
        self.images.append(pulled)
        r["ib_serves"] = self.serves(pulled, {"IMAGEBUILD_ENV": "dev"})
        r["docker_serves"] = self.serves(current, {})
        return r


def table(r: dict) -> str:
    def mb(size: int) -> str:
        return f"{size / 1e6:.2f} MB"
    rows = [("cold bake --push (empty store, no cache)", r["cold"], r["cold_down"], r["cold_up"]),
            ("fresh runner bake --push, app-only commit", r["runner"], r["runner_down"], r["runner_up"]),
            ("docker pull + build --cache-from + push", r["docker"], r["docker_down"], r["docker_up"])]
    lines = ["| step | seconds | registry bytes down | registry bytes up |", "| --- | --- | --- | --- |"]
    lines += [f"| {step} | {seconds:.2f} | {mb(down)} | {mb(up)} |" for step, seconds, down, up in rows]
    lines.append("")
    lines.append(f"runner built: {', '.join(r['runner_built']) or 'nothing'}; digest equals a warm local bake: "
                 f"{'yes' if r['digests']['runner'] == r['digests']['warm'] else 'NO'}; "
                 f"{r['cold'] / r['runner']:.1f}x faster than the cold bake, "
                 f"{r['docker'] / r['runner']:.1f}x faster than docker")
    lines.append(f"/health: imagebuild {'yes' if r['ib_serves'] else 'NO'}, "
                 f"docker {'yes' if r['docker_serves'] else 'NO'}; docker's host pip install for its "
                 f"context (not timed above): {r['docker_pip']:.2f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imagebuild-cold-runner-"))
    with FaultProxy(REGISTRY) as proxy:
        bench = ColdRunner(work, proxy)
        try:
            results = bench.measure()
        except Failed as exc:
            sys.exit(f"bench failed: {exc}")
        finally:
            bench.cleanup()
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
