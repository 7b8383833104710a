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
same round trip). Beside it, the share of the command's time spent importing modules
(`python -X importtime`, one run). The package is byte-compiled first, as installing a wheel does:
where PYTHONDONTWRITEBYTECODE is set, an editable checkout would otherwise compile its
modules again on every run. The peers' results are checked: `skopeo inspect` must read every tag
they wrote, with the digest expected.

    python bench/everyday.py [--registry 127.0.0.1:5000] [--runs 5] [--json]
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
        self.imports: dict[str, int] = {}

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
        self.record("start-up", "python -c pass", lambda: run(sys.executable, "-c", "pass"))
        self.record("start-up", "imagebuild --help", lambda: self.ib("--help"))
        for i in range(1, self.args.runs + 1):
            v = f"v{i}"
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

    def import_ms(self, argv: list[str], app: Path | None) -> int:
        """Milliseconds the command spends importing (the top-level imports' cumulative times), median of 3."""
        return statistics.median(self._import_ms_once(argv, app) for _ in range(3))

    def _import_ms_once(self, argv: list[str], app: Path | None) -> int:
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "imagebuild", *argv], capture_output=True,
                              text=True, cwd=app or self.work, env={**os.environ, "IMAGEBUILD_STORE": str(self.store.root)})
        total = 0
        for line in done.stderr.splitlines():
            parts = line.split("|")
            if line.startswith("import time:") and len(parts) == 3 and parts[2].startswith(" ") \
                    and not parts[2].startswith("  ") and parts[1].strip().isdigit():
                total += int(parts[1])
        return round(total / 1000)

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


def table(bench: Bench) -> list[dict]:
    median = {key: statistics.median(values) for key, values in bench.times.items()}
    python = median[("start-up", "python -c pass")]
    rows = []
    for (what, tool), seconds in median.items():
        if what == "start-up" or tool in PEERS.values():
            continue
        row = {"command": what, "imagebuild_ms": round(seconds * 1000), "python_ms": round(python * 1000)}
        if what in bench.imports:
            row["imports_ms"] = bench.imports[what]
        if what in bench.requests:
            row["requests"] = len(bench.requests[what])
            row["floor_ms"] = round((python + bench.curl_floor(what)) * 1000)
        if what in PEERS:
            row["peer"] = PEERS[what]
            row["peer_ms"] = round(median[(what, PEERS[what])] * 1000)
        rows.append(row)
    rows.append({"command": "start-up", "imagebuild_ms": round(median[("start-up", "imagebuild --help")] * 1000),
                 "python_ms": round(python * 1000)})
    return rows


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
    print("| command | imagebuild | of which imports | requests | floor | peer | peer time |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for row in rows:
        print(f"| {row['command']} | {row['imagebuild_ms']} ms | "
              f"{str(row['imports_ms']) + ' ms' if 'imports_ms' in row else ''} | {row.get('requests', '')} | "
              f"{str(row['floor_ms']) + ' ms' if 'floor_ms' in row else ''} | {row.get('peer', '')} | "
              f"{str(row['peer_ms']) + ' ms' if 'peer_ms' in row else ''} |")
    print(f"| `python -c pass` | {rows[-1]['python_ms']} ms | | | | | |")


if __name__ == "__main__":
    main()
