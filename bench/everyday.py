"""Everyday commands, side by side with the fastest peer and with the floor, in one run.

Against the loopback registry (default 127.0.0.1:5000, `scripts/services.sh`), with a
store of small images that differ only in their app layer (v0 .. vN), it times, as
the median of --runs runs:

  re-push      `imagebuild push` of the next app-only commit   vs `docker push` of the same
               image loaded into the engine (each run a new commit, so both send one layer)
  promote      `imagebuild promote` within the home repository vs `skopeo copy` to a tag
               of the same repository; and to a second repository vs `skopeo copy` there
  status       three environments (two in the home repository, one in a second), on the
               registry and on the local store
  history      one environment, on the registry and on the local store
  images       the local store (the command has no registry mode)

Beside each imagebuild time stands its floor: Python start-up (`python -c pass`) plus a
`curl` that sends the same requests the command made (recorded once through a counting
proxy, then replayed in one curl process over one kept-alive connection, one after
another; writes are replayed with empty bodies, which the registry refuses after the
same round trip). Beside it, the command's goal (at or under the peer's time; status and
history 150 ms on the registry, 100 ms on the local store; images 100 ms), whether it was
met, and the time spent importing modules (`python -X importtime`, each module's own time,
the interpreter's start-up modules left out, median of 3). For every goal missed it prints
where the time goes: Python start-up, imports per group (typer/click, httpx and what it
loads, yaml, jinja2, imagebuild, stdlib) with the slowest modules, the requests (curl's
time for them), and the rest, the command's own work. The package is byte-compiled first, as installing a wheel does:
where PYTHONDONTWRITEBYTECODE is set, an editable checkout would otherwise compile its
modules again on every run. The peers' results are checked: `skopeo inspect` must read every tag
they wrote, with the digest expected.

    python bench/everyday.py [--registry 127.0.0.1:5000] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
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

from imagebuild.stores.archive import write_docker_archive  # noqa: E402
from imagebuild.stores.layout import LayoutStore  # noqa: E402
from imagebuild.stores.lease import release_lease  # noqa: E402
from tests.registry_support.images import write_app_image  # noqa: E402
from tests.registry_support.proxy import FaultProxy  # noqa: E402

RECIPE = """name: hello
{registry}server:
  kind: command
  command: ["/bin/busybox", "echo", "hello"]
environments:
  - name: dev
  - name: test
{second}  - name: prod
"""
SKOPEO = ("skopeo", "--command-timeout", "60s")


def run(*cmd: str, cwd: Path | None = None, env: dict | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def imports_of(importtime: str) -> dict[str, int]:
    """module -> its own import microseconds, from `python -X importtime`'s report."""
    found = {}
    for line in importtime.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            found[parts[2].strip()] = int(parts[0].removeprefix("import time:").strip())
    return found


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-everyday-"))
        self.store = LayoutStore(self.work / "store").ensure()
        self.run_id = uuid.uuid4().hex[:8]
        self.registry = args.registry
        self.space = f"everyday-{self.run_id}"
        script = Path(sys.executable).parent / "imagebuild"
        self.cli = [str(script)] if script.exists() else [sys.executable, "-m", "imagebuild"]
        self.times: dict[tuple[str, str], list[float]] = {}
        self.requests: dict[str, list[tuple[str, str]]] = {}
        self.docker_tags: list[str] = []
        self.imports: dict[str, dict[str, int]] = {}     # command -> module -> own import microseconds

    # -- the tools --------------------------------------------------------------------------
    def ib(self, *argv: str, app: Path | None = None) -> str:
        return run(*self.cli, *argv, cwd=app or self.work, env={"IMAGEBUILD_STORE": str(self.store.root)})

    def record(self, what: str, tool: str, step) -> None:
        self.times.setdefault((what, tool), []).append(timed(step))

    def ref(self, registry: str, repo: str, tag: str) -> str:
        return f"{registry}/{self.space}/{repo}/hello:{tag}"

    def skopeo_copy(self, source: str, target: str) -> None:
        run(*SKOPEO, "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{source}", f"docker://{target}")

    def skopeo_digest(self, ref: str) -> str:
        return json.loads(run(*SKOPEO, "inspect", "--tls-verify=false", f"docker://{ref}"))["Digest"]

    # -- the run ----------------------------------------------------------------------------
    def prepare(self) -> list[str]:
        run(sys.executable, "-m", "compileall", "-q", str(REPO / "imagebuild"))
        runs = self.args.runs
        versions = [write_app_image(self.store, "hello", f"v{i}", message=f"commit {i}",
                                    filler_bytes=self.args.size_mb * 1024 * 1024) for i in range(runs + 2)]
        release_lease(self.store.root)     # gc-free store, but keep the lease out of the children's way
        for index, ref_name in enumerate(versions):
            tag = self.ref(self.registry, "docker", f"v{index}")
            archive = self.work / f"v{index}.tar"
            write_docker_archive(self.store, str(self.store.resolve(ref_name).digest), [tag], str(archive))
            run("docker", "load", "-q", "-i", str(archive))
            archive.unlink()
            self.docker_tags.append(tag)
        # v0 pushed by both beforehand: each timed push is then the next app-only commit.
        self.ib("push", "hello:v0", "--to", self.ref(self.registry, "ib", "v0"))
        run("docker", "push", "-q", self.docker_tags[0])
        for name, registry_line, second in (
                ("app-registry", f"registry: {self.registry}/{self.space}/ib\n",
                 f"    registry: {self.registry}/{self.space}/second\n"),
                ("app-local", "", "")):
            app = self.work / name
            app.mkdir()
            (app / "imagebuild.yaml").write_text(RECIPE.format(registry=registry_line, second=second))
        return versions

    def measure(self) -> None:
        reg, local = self.work / "app-registry", self.work / "app-local"
        for i in range(1, self.args.runs + 1):
            v = f"v{i}"
            self.record("start-up", "python -c pass", lambda: run(sys.executable, "-c", "pass"))
            self.record("start-up", "imagebuild --help", lambda: self.ib("--help"))
            self.record("re-push, app-only commit", "imagebuild push",
                        lambda: self.ib("push", f"hello:{v}", "--to", self.ref(self.registry, "ib", v)))
            self.record("re-push, app-only commit", "docker push", lambda: run("docker", "push", "-q", self.docker_tags[i]))
            self.record("promote within a repository", "imagebuild promote", lambda: self.ib("promote", v, "--to", "dev", app=reg))
            self.record("promote within a repository", "skopeo copy", lambda: self.skopeo_copy(
                self.ref(self.registry, "ib", v), self.ref(self.registry, "ib", "skopeo-dev")))
            self.record("promote to a second repository", "imagebuild promote",
                        lambda: self.ib("promote", v, "--to", "test", app=reg))
            self.record("promote to a second repository", "skopeo copy", lambda: self.skopeo_copy(
                self.ref(self.registry, "ib", v), self.ref(self.registry, "skopeo", "test")))
            self.record("status, 3 environments, registry", "imagebuild status", lambda: self.ib("status", app=reg))
            self.record("history, registry", "imagebuild history", lambda: self.ib("history", "dev", app=reg))
            # The same promotions on the local store, so its status and history have as much to read.
            self.record("promote, local store", "imagebuild promote", lambda: self.ib("promote", v, "--to", "dev", app=local))
            self.ib("promote", v, "--to", "test", app=local)
            self.record("status, 3 environments, local store", "imagebuild status", lambda: self.ib("status", app=local))
            self.record("history, local store", "imagebuild history", lambda: self.ib("history", "dev", app=local))
            self.record("images, local store", "imagebuild images", lambda: self.ib("images"))
        self.check_peers()

    def check_peers(self) -> None:
        """The peers did the same work: every tag they wrote reads back with the digest expected."""
        last = f"v{self.args.runs}"
        expected = self.skopeo_digest(self.ref(self.registry, "ib", last))
        for ref in (self.ref(self.registry, "ib", "skopeo-dev"), self.ref(self.registry, "skopeo", "test"),
                    self.ref(self.registry, "ib", "dev"), self.ref(self.registry, "second", "test")):
            got = self.skopeo_digest(ref)
            if got != expected:
                sys.exit(f"bench: {ref} holds {got}, not {expected}")
        self.skopeo_digest(self.docker_tags[self.args.runs])   # docker's push reads back

    def record_requests(self) -> None:
        """Each registry command once more, through a counting proxy: the requests it makes."""
        proxy = FaultProxy(self.registry).start()
        try:
            app = self.work / "app-proxied"
            app.mkdir()
            (app / "imagebuild.yaml").write_text(RECIPE.format(
                registry=f"registry: {proxy.address}/{self.space}/ib\n",
                second=f"    registry: {proxy.address}/{self.space}/second\n"))
            v = f"v{self.args.runs + 1}"
            steps = {
                "re-push, app-only commit": lambda: self.ib("push", f"hello:{v}", "--to", self.ref(proxy.address, "ib", v)),
                "promote within a repository": lambda: self.ib("promote", v, "--to", "dev", app=app),
                "promote to a second repository": lambda: self.ib("promote", v, "--to", "test", app=app),
                "status, 3 environments, registry": lambda: self.ib("status", app=app),
                "history, registry": lambda: self.ib("history", "dev", app=app),
            }
            for what, step in steps.items():
                proxy.log.clear()
                step()
                self.requests[what] = [(e.method, e.path) for e in proxy.log.exchanges]
            # After the recording: these runs do the work again (a push here would upload first).
            self.imports = {
                "re-push, app-only commit": self.import_ms(["push", f"hello:{v}", "--to", self.ref(proxy.address, "ib", v)], app),
                "promote within a repository": self.import_ms(["promote", v, "--to", "dev", "--dry-run"], app),
                "promote to a second repository": self.import_ms(["promote", v, "--to", "test", "--dry-run"], app),
                "promote, local store": self.import_ms(["promote", "v1", "--to", "dev", "--dry-run"], self.work / "app-local"),
                "status, 3 environments, registry": self.import_ms(["status"], app),
                "history, registry": self.import_ms(["history", "dev"], app),
                "status, 3 environments, local store": self.import_ms(["status"], self.work / "app-local"),
                "history, local store": self.import_ms(["history", "dev"], self.work / "app-local"),
                "images, local store": self.import_ms(["images"], None),
            }
        finally:
            proxy.stop()

    def import_ms(self, argv: list[str], app: Path | None) -> dict[str, int]:
        """Microseconds the command spends importing each module (its own time, without what it imports
        in turn), the interpreter's start-up modules left out: the median of 3 runs, per module."""
        runs = [self._import_us_once(argv, app) for _ in range(3)]
        modules = set().union(*runs)
        return {module: round(statistics.median(run.get(module, 0) for run in runs)) for module in modules}

    def _import_us_once(self, argv: list[str], app: Path | None) -> dict[str, int]:
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "imagebuild", *argv], capture_output=True,
                              text=True, cwd=app or self.work, env={**os.environ, "IMAGEBUILD_STORE": str(self.store.root)})
        return {module: own for module, own in imports_of(done.stderr).items() if module not in self.start_up_modules}

    @functools.cached_property
    def start_up_modules(self) -> set[str]:
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True)
        return set(imports_of(done.stderr))

    def curl_floor(self, what: str) -> float:
        """The command's requests sent by one curl process, one after another on one connection."""
        argv = ["curl", "-s", "-o", "/dev/null"]
        for index, (method, path) in enumerate(self.requests[what]):
            if index:
                argv += ["--next", "-s", "-o", "/dev/null"]
            if method == "HEAD":
                argv += ["-I"]
            elif method != "GET":
                argv += ["-X", method, "--data-binary", ""]
            argv.append(f"http://{self.registry}{path}")
        times = [timed(lambda: subprocess.run(argv, check=True)) for _ in range(self.args.runs)]
        return statistics.median(times)

    def close(self) -> None:
        for tag in self.docker_tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)


PEERS = {"re-push, app-only commit": "docker push", "promote within a repository": "skopeo copy",
         "promote to a second repository": "skopeo copy"}
# The goal of each command: at or under its peer's time, or a fixed budget.
BUDGET_MS = {"status, 3 environments, registry": 150, "history, registry": 150,
             "status, 3 environments, local store": 100, "history, local store": 100, "images, local store": 100}
# Where a module's import time is counted, by its top-level package; anything else is "stdlib".
GROUPS = {"typer/click": ("typer", "click", "rich", "shellingham"),
          "httpx": ("httpx", "httpcore", "h11", "h2", "anyio", "sniffio", "certifi", "idna", "ssl"),
          "yaml": ("yaml", "_yaml"), "jinja2": ("jinja2", "markupsafe"),
          "imagebuild": ("imagebuild", "__editable___imagebuild_0_1_0_finder"), "stdlib": ()}


def group_of(module: str) -> str:
    top = module.split(".")[0]
    return next((group for group, names in GROUPS.items() if top in names), "stdlib")


def table(bench: Bench) -> list[dict]:
    median = {key: statistics.median(values) for key, values in bench.times.items()}
    python = median[("start-up", "python -c pass")]
    rows = []
    for (what, tool), seconds in median.items():
        if what == "start-up" or tool in PEERS.values():
            continue
        row = {"command": what, "imagebuild_ms": round(seconds * 1000), "python_ms": round(python * 1000),
               "floor_ms": round(python * 1000)}
        if what in bench.imports:
            by_group: dict[str, int] = {}
            for module, micros in bench.imports[what].items():
                by_group[group_of(module)] = by_group.get(group_of(module), 0) + micros
            row["imports"] = {group: round(micros / 1000) for group, micros in by_group.items()}
            row["imports_ms"] = round(sum(by_group.values()) / 1000)
            row["slowest_imports"] = {module: round(micros / 1000, 1) for module, micros in
                                      sorted(bench.imports[what].items(), key=lambda item: -item[1])[:6]}
        if what in bench.requests:
            row["requests"] = len(bench.requests[what])
            row["requests_ms"] = round(bench.curl_floor(what) * 1000)
            row["floor_ms"] = round(python * 1000) + row["requests_ms"]
        if what in PEERS:
            row["peer"] = PEERS[what]
            row["peer_ms"] = round(median[(what, PEERS[what])] * 1000)
        goal = row.get("peer_ms", BUDGET_MS.get(what))
        if goal is not None:
            row["goal_ms"] = goal
            row["goal_met"] = row["imagebuild_ms"] <= goal
        # What is neither start-up, imports nor the requests: the command's own work (and, as
        # importtime's own overhead inflates imports, a lower bound).
        row["work_ms"] = max(0, row["imagebuild_ms"] - row["floor_ms"] - row.get("imports_ms", 0))
        rows.append(row)
    rows.append({"command": "start-up", "imagebuild_ms": round(median[("start-up", "imagebuild --help")] * 1000),
                 "python_ms": round(python * 1000)})
    return rows


def breakdown(row: dict) -> str:
    """Where a command's time goes: start-up, imports per group, requests, work."""
    parts = [f"python start-up {row['python_ms']}"]
    parts += [f"import {group} {ms}" for group, ms in sorted(row.get("imports", {}).items(), key=lambda i: -i[1]) if ms]
    if "requests_ms" in row:
        parts.append(f"{row['requests']} requests {row['requests_ms']} (curl)")
    parts.append(f"work {row['work_ms']}")
    slowest = ", ".join(f"{module} {ms}" for module, ms in row.get("slowest_imports", {}).items())
    return (f"{row['command']}: {row['imagebuild_ms']} ms against a goal of {row['goal_ms']} ms = "
            + " + ".join(parts) + " ms" + (f"; slowest imports (ms, own time): {slowest}" if slowest else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=os.environ.get("IMAGEBUILD_TEST_REGISTRY", "127.0.0.1:5000"))
    parser.add_argument("--runs", type=int, default=5, help="runs per command; the median is reported")
    parser.add_argument("--size-mb", type=int, default=8, help="size of the images' runtime layer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bench = Bench(args)
    try:
        bench.prepare()
        bench.measure()
        bench.record_requests()
        rows = table(bench)
    finally:
        bench.close()
    if args.json:
        print(json.dumps({"runs": args.runs, "rows": rows,
                          "requests": {what: [" ".join(r) for r in sent] for what, sent in bench.requests.items()}},
                         indent=2))
        return
    print(f"everyday commands: median of {args.runs} runs, registry {args.registry}, "
          f"floor = python start-up + curl sending the same requests")
    print("| command | imagebuild | floor | goal | met | of which imports | requests | peer | peer time |")
    print("|---|---:|---:|---:|---|---:|---:|---|---:|")
    for row in rows[:-1]:
        print(f"| {row['command']} | {row['imagebuild_ms']} ms | {row['floor_ms']} ms | "
              f"{str(row['goal_ms']) + ' ms' if 'goal_ms' in row else ''} | "
              f"{('yes' if row['goal_met'] else 'no') if 'goal_ms' in row else ''} | "
              f"{str(row['imports_ms']) + ' ms' if 'imports_ms' in row else ''} | {row.get('requests', '')} | "
              f"{row.get('peer', '')} | {str(row['peer_ms']) + ' ms' if 'peer_ms' in row else ''} |")
    print(f"| start-up (`imagebuild --help`) | {rows[-1]['imagebuild_ms']} ms | | | | | | | |")
    print(f"| `python -c pass` | {rows[-1]['python_ms']} ms | | | | | | | |")
    missed = [row for row in rows[:-1] if row.get("goal_met") is False]
    if missed:
        print("\nwhere the time goes, for each goal missed (imports by `python -X importtime`, which slows them):")
        for row in missed:
            print(f"- {breakdown(row)}")


if __name__ == "__main__":
    main()
