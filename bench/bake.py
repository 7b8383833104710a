"""Bake benchmark: `imagebuild bake` side by side with `docker build` on examples/flask-hello.

In one run, on a temporary git copy of the example (its imagebuild.lock
committed, so both sides use the same Debian package versions):

  cold      `imagebuild bake` into an empty store (twice, two stores), and into
            a store already holding the os and runtime layers;
            `docker build --no-cache` of bench/flask.Dockerfile (twice), on a
            base image made beforehand from the same os + runtime rootfs
            (bench/base.Dockerfile), plus the host-side pip install its context needs
  warm      after a commit that changes only hello.py: re-bake into the first
            store vs `docker build` with its cache
  size      imagebuild: compressed layers (what a registry stores) and unpacked;
            docker: `docker image inspect` Size; both images loaded in Docker
            are also started and must answer /health
  identical whether two clean builds give the same image digest (imagebuild:
            manifest digest; docker: image ID and layer diff_ids)
  changed   layers and bytes that differ after the app-only commit
  push      two more app-only commits: `imagebuild bake` + `imagebuild push` against `docker
            build` + `docker push`, to the loopback registry (each side pushed the previous
            commit beforehand), and, for one more commit under cProfile, where the bake and
            the push spend their time (read input, git, plan, layers, config + manifest, requests)
  one process  the same warm round as one `imagebuild bake --push` (the recipe's `registry:` set
            to the loopback registry), beside the two processes, wall and CPU seconds, and
            where a profiled `bake --push` spends its time

    python bench/bake.py [--keep] [--json]
    python bench/bake.py --warm-only [--rounds N]

Needs root (mmdebstrap), docker, umoci and the Debian mirror. Cleans up its
containers, images and temporary directories, also when interrupted. The package is
byte-compiled first, as installing a wheel does (with PYTHONDONTWRITEBYTECODE set, an
editable checkout would otherwise compile its modules again on every run).

--warm-only measures only imagebuild's warm rounds (two processes and one), on a store seeded
with the tests' cached Debian layers (~/.cache/imagebuild-test, built once by mmdebstrap when
missing): no cold bake, no Docker; needs git, the loopback registry and the test extras.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import uuid
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imagebuild.build.layers import debian  # noqa: E402
from imagebuild.build.layers import libraries as libraries_layer  # noqa: E402
from imagebuild.build.layers import server as server_layer  # noqa: E402
from imagebuild.sources.lockfile import lock_path_for, read_lock  # noqa: E402
from imagebuild.recipe.loader import load_recipe  # noqa: E402
from imagebuild.stores.layout import LayoutStore  # noqa: E402

EXAMPLE = REPO / "examples" / "flask-hello"
BASE_DOCKERFILE = REPO / "bench" / "base.Dockerfile"
APP_DOCKERFILE = REPO / "bench" / "flask.Dockerfile"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
BAKE_TIMEOUT = 1800      # a cold bake downloads and unpacks a Debian system
DOCKER_TIMEOUT = 900
HEALTH_WAIT = 60
REGISTRY = os.environ.get("IMAGEBUILD_TEST_REGISTRY", "127.0.0.1:5000")     # the loopback registry


class Failed(Exception):
    pass


def imagebuild_cli() -> list[str]:
    script = Path(sys.executable).parent / "imagebuild"
    return [str(script)] if script.exists() else [sys.executable, "-m", "imagebuild"]


def run(cmd: list[str], timeout: float, cwd: Path | None = None, env: dict | None = None,
        log: Path | None = None) -> tuple[float, str]:
    """Run to completion; return (seconds, stdout). stderr goes to `log` when given."""
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from None
    seconds = time.perf_counter() - started
    if log is not None:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise Failed(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{tail}")
    return seconds, done.stdout


def timed(cmd: list[str], timeout: float, log: Path | None = None) -> tuple[float, float, str]:
    """Run to completion; return (wall seconds, CPU seconds of the process and its children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, out = run(cmd, timeout, log=log)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, out


def git(app: Path, *args: str) -> str:
    return run(["git", "-C", str(app), *args], 60, env=GIT_ENV)[1]


def docker(*args: str, timeout: float = 120) -> str:
    return run(["docker", *args], timeout)[1]


class Bench:
    def __init__(self, work: Path):
        self.work = work
        self.app = work / "app"
        self.log = work / "commands.log"
        self.cli = imagebuild_cli()
        self.prefix = f"imagebuild-bench-{uuid.uuid4().hex[:8]}"
        self.images: list[str] = []
        self.containers: list[str] = []
        self.results: dict = {}

    # -- set-up ------------------------------------------------------------------

    def prepare_app(self) -> None:
        """A git repository holding the example's tracked files (a lock someone left untracked is not one)."""
        for name in git(REPO, "ls-files", "-z", "--", str(EXAMPLE)).split("\0"):
            if name:
                target = self.app / Path(name).relative_to(EXAMPLE.relative_to(REPO))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, target)
        git(self.app, "init", "-q")
        git(self.app, "add", "-A")
        git(self.app, "commit", "-q", "-m", "flask-hello")
        if not self.lock_fits():
            # A clean bake takes only a committed lock made for the recipe's os/runtime: make one, untimed.
            seconds, _ = run([*self.cli, "lock", str(self.app)], BAKE_TIMEOUT, log=self.log)
            self.results["lock_seconds"] = seconds
            git(self.app, "add", "imagebuild.lock")
            git(self.app, "commit", "-q", "-m", "lock the Debian packages")

    def lock_fits(self) -> bool:
        recipe = load_recipe(self.app / "imagebuild.yaml")
        lock = read_lock(lock_path_for(recipe.source))
        return lock is not None and debian.lock_fits(lock, recipe.os, recipe.runtime)

    def bake(self, store: Path) -> tuple[float, dict]:
        seconds, out = run([*self.cli, "bake", str(self.app), "--store", str(store), "--json"],
                           BAKE_TIMEOUT, log=self.log)
        return seconds, json.loads(out)

    def prebuild_debian(self, store: Path) -> float:
        """Only the os and runtime layers into `store`, as an earlier bake of any app would leave them."""
        recipe = load_recipe(self.app / "imagebuild.yaml")
        started = time.perf_counter()
        debian.build_debian_layers(LayoutStore(store).ensure(), recipe.os, recipe.runtime,
                                   lock_path_for(recipe.source), update_lock=False)
        return time.perf_counter() - started

    # -- the Docker side ---------------------------------------------------------------

    def base_rootfs(self, store: Path, ref: str, layer_count: int, out_dir: Path) -> Path:
        """Flatten the first `layer_count` layers (os, runtime) of a baked image into rootfs.tar."""
        layout = self.work / "oci"
        run([*self.cli, "export", ref, f"oci:{layout}", "--store", str(store)], 300, log=self.log)
        blobs = layout / "blobs" / "sha256"
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
        config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
        config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:layer_count]
        config["history"] = [h for h in config.get("history", []) if not h.get("empty_layer")][:layer_count]
        config_raw = json.dumps(config).encode()
        manifest["config"] = {**manifest["config"], "digest": _put_blob(blobs, config_raw), "size": len(config_raw)}
        manifest["layers"] = manifest["layers"][:layer_count]
        manifest.pop("annotations", None)
        manifest_raw = json.dumps(manifest).encode()
        index["manifests"].append({"mediaType": manifest["mediaType"], "digest": _put_blob(blobs, manifest_raw),
                                   "size": len(manifest_raw),
                                   "annotations": {"org.opencontainers.image.ref.name": "base"}})
        (layout / "index.json").write_text(json.dumps(index))
        rootfs = self.work / "rootfs"
        run(["umoci", "raw", "unpack", "--image", f"{layout}:base", str(rootfs)], 600, log=self.log)
        out_dir.mkdir(parents=True)
        run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sort=name", "-C", str(rootfs),
             "-cf", str(out_dir / "rootfs.tar"), "."], 600, log=self.log)
        shutil.rmtree(rootfs)
        shutil.rmtree(layout)
        return out_dir / "rootfs.tar"

    def docker_context(self) -> tuple[Path, float]:
        """deps/ (host pip install, rendered gunicorn config) and app/; returns (dir, pip seconds)."""
        recipe = load_recipe(self.app / "imagebuild.yaml")
        context = self.work / "docker-context"
        deps = context / "deps"
        deps.mkdir(parents=True)
        requirements = (self.app / recipe.libraries.requirements).read_bytes().rstrip(b"\n") + b"\n"
        requirements += ("\n".join(recipe.server.packages) + "\n").encode()
        started = time.perf_counter()
        libraries_layer.pip_install(requirements, deps / "site-packages", recipe.runtime.python,
                                    libraries_layer.pip_platforms(recipe), "docker context")
        pip_seconds = time.perf_counter() - started
        shutil.rmtree(deps / "site-packages" / "bin", ignore_errors=True)  # host shebangs; servers run as -m
        # The app imports imagebuild_runtime (its settings, from the environment without the launcher):
        # without it the image's workers fail to boot and nothing answers /health.
        shutil.copy2(REPO / "imagebuild" / "launcher" / "imagebuild_runtime.py", deps / "site-packages")
        (conf,) = [content for path, (content, _) in server_layer.rendered_files(recipe).items()
                   if path.endswith("gunicorn.conf.py")]
        (deps / "gunicorn.conf.py").write_bytes(conf)
        self.refresh_app_context(context)
        return context, pip_seconds

    def refresh_app_context(self, context: Path) -> None:
        """app/ as CI would check it out: exactly the committed files."""
        target = context / "app"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        archive = subprocess.run(["git", "-C", str(self.app), "archive", "HEAD"], capture_output=True,
                                 check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True, timeout=60)

    def docker_build(self, dockerfile: Path, context: Path, tag: str, no_cache: bool,
                     base: str | None = None) -> float:
        cmd = ["docker", "build", "-q", "-f", str(dockerfile), "-t", tag]
        if no_cache:
            cmd.append("--no-cache")
        if base:
            cmd += ["--build-arg", f"BASE={base}"]
        self.images.append(tag)
        seconds, _ = run([*cmd, str(context)], DOCKER_TIMEOUT, env={"DOCKER_BUILDKIT": "0"}, log=self.log)
        return seconds

    def inspect(self, tag: str) -> dict:
        return json.loads(docker("image", "inspect", tag))[0]

    def saved_layers(self, tag: str) -> dict[str, tuple[int, int]]:
        """diff_id → (tar bytes, gzip -6 bytes) of each layer, from `docker save`."""
        archive = self.work / "saved.tar"
        docker("save", "-o", str(archive), tag, timeout=300)
        found = {}
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
            for name in manifest[0]["Layers"]:
                digest, raw, packed = hashlib.sha256(), 0, _GzipCounter()
                with tar.extractfile(name) as layer:
                    while chunk := layer.read(1 << 20):
                        digest.update(chunk)
                        raw += len(chunk)
                        packed.update(chunk)
                found["sha256:" + digest.hexdigest()] = (raw, packed.size())
        archive.unlink()
        return found

    def load_baked(self, store: Path, ref: str) -> str:
        archive = self.work / "baked.tar"
        run([*self.cli, "export", ref, f"docker-archive:{archive}", "--store", str(store)], 300, log=self.log)
        out = docker("load", "-i", str(archive), timeout=300)
        archive.unlink()
        loaded = out.strip().rsplit("Loaded image: ", 1)[-1].strip()
        tag = f"{self.prefix}-baked:{ref.rsplit(':', 1)[-1]}"
        docker("tag", loaded, tag)
        self.images.append(tag)
        if loaded != tag:
            docker("rmi", loaded)
        return tag

    def serves(self, tag: str, env: dict[str, str]) -> bool:
        """Start the image and wait (bounded) for /health to answer 200."""
        args = ["run", "-d", "-p", "127.0.0.1::8000"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        container = docker(*args, tag).strip()
        self.containers.append(container)
        port = docker("port", container, "8000/tcp").strip().splitlines()[0].rsplit(":", 1)[1]
        deadline = time.monotonic() + HEALTH_WAIT
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return True
            except OSError:
                time.sleep(0.5)
        return False

    def cleanup(self) -> None:
        for container in self.containers:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)
        for tag in reversed(self.images):
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)

    # -- the run -----------------------------------------------------------------------

    def measure(self) -> dict:
        r = self.results
        stores = self.work / "stores"
        self.prepare_app()

        progress("imagebuild: cold bake into an empty store (1 of 2)")
        r["ib_cold"], first = self.bake(stores / "a")
        progress("imagebuild: cold bake into an empty store (2 of 2)")
        r["ib_cold2"], second = self.bake(stores / "b")
        progress("imagebuild: bake into a store holding only the os and runtime layers")
        r["ib_debian_only"] = self.prebuild_debian(stores / "c")
        shutil.copytree(stores / "c", stores / "d")
        r["ib_cold_os_cached"], third = self.bake(stores / "c")
        r["ib_cold_os_cached2"], fourth = self.bake(stores / "d")
        r["ib_digests"] = [first["digest"], second["digest"], third["digest"], fourth["digest"]]
        r["ib_layers"] = [{"name": layer["name"], "size": layer["size"]} for layer in first["layers"]]
        r["ib_compressed"] = sum(layer["size"] for layer in first["layers"])
        r["ib_unpacked"] = unpacked_size(stores / "a", [layer["digest"] for layer in first["layers"]])

        progress("docker: base image from the same os + runtime rootfs")
        debian_layers = sum(1 for layer in first["layers"] if layer["name"] in ("os", "runtime"))
        base_dir = self.work / "docker-base"
        self.base_rootfs(stores / "a", first["image"], debian_layers, base_dir)
        base = f"{self.prefix}-base:latest"
        r["docker_base_seconds"] = self.docker_build(BASE_DOCKERFILE, base_dir, base, no_cache=True)
        shutil.rmtree(base_dir)
        r["docker_base_size"] = self.inspect(base)["Size"]

        progress("docker: context (host pip install) and two --no-cache builds")
        context, r["docker_pip"] = self.docker_context()
        app1, app2 = f"{self.prefix}-app:1", f"{self.prefix}-app:2"
        r["docker_cold"] = self.docker_build(APP_DOCKERFILE, context, app1, no_cache=True, base=base)
        r["docker_cold2"] = self.docker_build(APP_DOCKERFILE, context, app2, no_cache=True, base=base)
        info1, info2 = self.inspect(app1), self.inspect(app2)
        r["docker_ids"] = [info1["Id"], info2["Id"]]
        layers1, layers2 = info1["RootFS"]["Layers"], info2["RootFS"]["Layers"]
        r["docker_layer_count"] = len(layers1)
        r["docker_same_layers"] = sum(a == b for a, b in zip(layers1, layers2))
        r["docker_size"] = info1["Size"]
        saved = self.saved_layers(app1)
        r["docker_tar_bytes"] = sum(raw for raw, _ in saved.values())
        r["docker_gzip_bytes"] = sum(packed for _, packed in saved.values())

        progress("both images: load, start, /health")
        baked = self.load_baked(stores / "a", first["image"])
        r["ib_docker_size"] = self.inspect(baked)["Size"]
        r["ib_serves"] = self.serves(baked, {"IMAGEBUILD_ENV": "dev"})
        r["docker_serves"] = self.serves(app1, {})

        progress("two app-only commits: warm re-bake and warm docker build after each")
        r["ib_warm"], r["docker_warm"] = [], []
        before = set(layers1) | set(layers2)
        for number, greeting in enumerate(("Hello again from Flask", "Hello once more from Flask"), start=3):
            hello = self.app / "hello.py"
            hello.write_text(hello.read_text().replace("Hello from Flask", greeting)
                             .replace("Hello again from Flask", greeting))
            git(self.app, "commit", "-q", "-am", "app: a new greeting")
            seconds, warm = self.bake(stores / "a")
            r["ib_warm"].append(seconds)
            self.refresh_app_context(context)
            tag = f"{self.prefix}-app:{number}"
            r["docker_warm"].append(self.docker_build(APP_DOCKERFILE, context, tag, no_cache=False, base=base))
            if number == 3:
                rebuilt = [layer for layer in warm["layers"] if not layer["cached"]]
                r["ib_warm_layers"] = [layer["name"] for layer in rebuilt]
                r["ib_warm_bytes"] = sum(layer["size"] for layer in rebuilt)
                r["ib_warm_unpacked"] = unpacked_size(stores / "a", [layer["digest"] for layer in rebuilt])
                after = self.inspect(tag)["RootFS"]["Layers"]
                changed = [diff_id for diff_id in after if diff_id not in before]
                saved = self.saved_layers(tag)
                r["docker_warm_layers"] = len(changed)
                r["docker_warm_tar_bytes"] = sum(saved[d][0] for d in changed)
                r["docker_warm_gzip_bytes"] = sum(saved[d][1] for d in changed)

        progress("two more app-only commits: warm re-bake + push against docker build + docker push")
        r.update(self.warm_push(stores / "a", base, context))
        return r

    def warm_push(self, store: Path, base: str, context: Path) -> dict:
        """After an app-only commit: `imagebuild bake` + `imagebuild push` against `docker build` +
        `docker push`, to the loopback registry, where each side pushed the previous commit (untimed)."""
        space = f"{REGISTRY}/{self.prefix}"
        _, previous = self.bake(store)
        run([*self.cli, "push", previous["image"], "--store", str(store), "--to",
             f"{space}/ib/app:{previous['version']}"], DOCKER_TIMEOUT, log=self.log)
        docker_previous = f"{space}/docker/app:previous"
        docker("tag", f"{self.prefix}-app:4", docker_previous)
        self.images.append(docker_previous)
        docker("push", docker_previous, timeout=DOCKER_TIMEOUT)
        r: dict = {"ib_bake_push": [], "docker_build_push": [], "ib_bake_only": [], "docker_build_only": []}
        for number in (5, 6):
            hello = self.app / "hello.py"
            hello.write_text(hello.read_text() + f"\n# app-only commit {number}\n")
            git(self.app, "commit", "-q", "-am", f"app: commit {number}")
            baking, baked = self.bake(store)
            pushing, _ = run([*self.cli, "push", baked["image"], "--store", str(store), "--to",
                              f"{space}/ib/app:{baked['version']}"], DOCKER_TIMEOUT, log=self.log)
            r["ib_bake_only"].append(baking)
            r["ib_bake_push"].append(baking + pushing)
            self.refresh_app_context(context)
            tag = f"{space}/docker/app:{number}"
            building = self.docker_build(APP_DOCKERFILE, context, tag, no_cache=False, base=base)
            pushing, _ = run(["docker", "push", tag], DOCKER_TIMEOUT, log=self.log)
            r["docker_build_only"].append(building)
            r["docker_build_push"].append(building + pushing)
        r["ib_bake_push_breakdown"] = self.warm_breakdown(store, space)
        r.update(self.one_process(store, space, rounds=2))
        return r

    def commit_app(self, label: str) -> None:
        """An app-only commit: one more line in hello.py."""
        hello = self.app / "hello.py"
        hello.write_text(hello.read_text() + f"\n# app-only commit {label}\n")
        git(self.app, "commit", "-q", "-am", f"app: commit {label}")

    def one_process(self, store: Path, space: str, rounds: int) -> dict:
        """Warm rounds both ways, alternating, wall and CPU seconds: `imagebuild bake` then `imagebuild
        push` (two processes) against one `imagebuild bake --push` with the recipe's `registry:` set
        to the loopback registry (which also reads and writes its layer cache, REGISTRY/NAME-cache);
        then one `bake --push` under cProfile, for where it spends its time."""
        recipe = self.app / "imagebuild.yaml"
        recipe.write_text(f"registry: {space}/one\n" + recipe.read_text())
        git(self.app, "commit", "-q", "-am", "push to the loopback registry")
        bake_push = [*self.cli, "bake", str(self.app), "--store", str(store), "--json", "--push"]
        timed(bake_push, DOCKER_TIMEOUT, log=self.log)      # untimed: the first push of this repository
        r: dict = {key: [] for key in ("two_bake", "two_push", "two_bake_cpu", "two_push_cpu", "one", "one_cpu")}
        for number in range(rounds):
            self.commit_app(f"two processes {number}")
            wall, cpu, out = timed([*self.cli, "bake", str(self.app), "--store", str(store), "--json"],
                                   BAKE_TIMEOUT, log=self.log)
            baked = json.loads(out)
            r["two_bake"].append(wall)
            r["two_bake_cpu"].append(cpu)
            wall, cpu, _ = timed([*self.cli, "push", baked["image"], "--store", str(store), "--to",
                                  f"{space}/two/flask-hello:{baked['version']}"], DOCKER_TIMEOUT, log=self.log)
            r["two_push"].append(wall)
            r["two_push_cpu"].append(cpu)
            self.commit_app(f"one process {number}")
            wall, cpu, _ = timed(bake_push, DOCKER_TIMEOUT, log=self.log)
            r["one"].append(wall)
            r["one_cpu"].append(cpu)
        self.commit_app("one process, profiled")
        profile = self.work / "profiles" / "bake-push"
        profile.parent.mkdir(exist_ok=True)
        run([sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "imagebuild", *bake_push[len(self.cli):]],
            DOCKER_TIMEOUT, log=self.log)
        r["one_breakdown"] = profile_phases(profile, {**BAKE_PHASES, **ONE_PROCESS_PUSH})
        return r

    def warm_only(self, rounds: int) -> dict:
        """Only the warm rounds, on a store seeded with the tests' cached Debian layers (no cold bake,
        no Docker): the first bake builds the libraries and server layers, untimed."""
        from tests.bake_support import example_repo, seed
        from tests.debian_fixtures import _cache_dir, build_cached_base

        recipe = load_recipe(EXAMPLE / "imagebuild.yaml")
        progress("the cached Debian layers (built once by mmdebstrap when missing)")
        base = build_cached_base(_cache_dir(recipe.os, recipe.runtime), recipe.os, recipe.runtime)
        self.app = example_repo(self.work, "flask-hello", lock=base.lock_path)
        store = self.work / "store"
        seed(store, base)
        progress("first bake (untimed)")
        self.bake(store)
        progress(f"{rounds} warm rounds: bake + push in two processes, bake --push in one")
        return self.one_process(store, f"{REGISTRY}/{self.prefix}", rounds)

    def warm_breakdown(self, store: Path, space: str) -> dict[str, float]:
        """Where a warm bake + push spends its time: one more app-only commit, both commands run
        under cProfile (which slows them; read the shares), seconds per phase."""
        hello = self.app / "hello.py"
        hello.write_text(hello.read_text() + "\n# app-only commit, profiled\n")
        git(self.app, "commit", "-q", "-am", "app: commit profiled")
        profiles = self.work / "profiles"
        profiles.mkdir(exist_ok=True)
        python = [sys.executable, "-m", "cProfile", "-o"]
        _, out = run([*python, str(profiles / "bake"), "-m", "imagebuild", "bake", str(self.app), "--store",
                      str(store), "--json"], BAKE_TIMEOUT, log=self.log)
        baked = json.loads(out)
        run([*python, str(profiles / "push"), "-m", "imagebuild", "push", baked["image"], "--store", str(store),
             "--to", f"{space}/ib/app:{baked['version']}"], DOCKER_TIMEOUT, log=self.log)
        return {**profile_phases(profiles / "bake", BAKE_PHASES), **profile_phases(profiles / "push", PUSH_PHASES)}


# Phases of a profiled command: label -> (file ending, function); the cumulative time of that function.
BAKE_PHASES = {
    "bake: whole process": ("", "<module>"),
    "bake: imports": ("", "_find_and_load"),
    "bake: read input (recipe, git, lock)": ("imagebuild/build/bake.py", "read_input"),
    "bake: git runs": ("imagebuild/sources/git.py", "_git"),
    "bake: app files from git": ("imagebuild/build/layers/app.py", "app_files"),
    "bake: plan": ("imagebuild/plan.py", "make_plan"),
    "bake: layers, built or found in the cache": ("imagebuild/build/bake.py", "_build"),
    "bake: layer app built": ("imagebuild/build/layers/app.py", "build"),
    "bake: layer config built": ("imagebuild/build/layers/config.py", "build"),
    "bake: config + manifest written": ("imagebuild/stores/layout.py", "write_image"),
    "bake: subprocesses (all)": ("subprocess.py", "run"),
}
ONE_PROCESS_PUSH = {
    "bake --push: the registry asked before the bake (check)": ("imagebuild/publish/registry.py", "check"),
    "bake --push: layer cache looked up": ("imagebuild/build/remote_cache.py", "lookup"),
    "bake --push: image, SBOMs and their tags pushed (push_image)": ("imagebuild/stores/registry.py", "push_image"),
    "bake --push: layer cache entries written": ("imagebuild/build/remote_cache.py", "publish"),
}
PUSH_PHASES = {
    "push: whole process": ("", "<module>"),
    "push: imports": ("", "_find_and_load"),
    "push: requests and uploads (push_image)": ("imagebuild/stores/registry.py", "push_image"),
}


def profile_phases(path: Path, phases: dict[str, tuple[str, str]]) -> dict[str, float]:
    import pstats

    stats = pstats.Stats(str(path)).stats     # (file, line, function) -> (cc, nc, tt, ct, callers)
    found = {}
    for label, (ending, function) in phases.items():
        times = [ct for (file, _, name), (_, _, _, ct, _) in stats.items()
                 if name == function and file.endswith(ending)]
        if label.endswith("whole process"):
            found[label] = max(times, default=0.0)      # the outermost module: the script run
        else:
            found[label] = sum(times)
    return found


class _GzipCounter:
    """Size of the data gzip -6 would give, without keeping it."""

    def __init__(self):
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._size = 0

    def update(self, data: bytes) -> None:
        self._size += len(self._compressor.compress(data))

    def size(self) -> int:
        return self._size + len(self._compressor.flush())


def _put_blob(blobs: Path, raw: bytes) -> str:
    digest = hashlib.sha256(raw).hexdigest()
    (blobs / digest).write_bytes(raw)
    return "sha256:" + digest


def unpacked_size(store: Path, digests: list[str]) -> int:
    """Total bytes of the layers' uncompressed tars."""
    total = 0
    for digest in digests:
        with gzip.open(store / "blobs" / "sha256" / digest.split(":")[1]) as layer:
            while chunk := layer.read(1 << 20):
                total += len(chunk)
    return total


def progress(text: str) -> None:
    print(f"bench: {text} ...", file=sys.stderr, flush=True)


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def kb(size: int) -> str:
    return f"{size / 1e3:.1f} kB"


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def seconds(values: list[float]) -> str:
    return " and ".join(f"{value:.1f}" for value in values)


def table(r: dict) -> str:
    same_ib = len(set(r["ib_digests"])) == 1
    same_docker = r["docker_ids"][0] == r["docker_ids"][1]
    pip = r["docker_pip"]
    rows = [
        ("cold, nothing cached (s)",
         f"{seconds([r['ib_cold'], r['ib_cold2']])} (Debian layers built from packages)",
         f"n/a: needs the base image, made beforehand ({r['docker_base_seconds']:.1f} s from the "
         f"flattened rootfs.tar; no image can be pulled here)"),
        ("cold, os + runtime at hand (s)",
         f"{seconds([r['ib_cold_os_cached'], r['ib_cold_os_cached2']])} (os, runtime layers in the store)",
         f"{seconds([pip + r['docker_cold'], pip + r['docker_cold2']])} (host pip {pip:.1f} + "
         f"`docker build --no-cache` {seconds([r['docker_cold'], r['docker_cold2']])})"),
        ("warm, after an app-only commit (s)", seconds(r["ib_warm"]), seconds(r["docker_warm"])),
        ("changed by the app-only commit",
         f"{len(r['ib_warm_layers'])} of {len(r['ib_layers'])} layers ({', '.join(r['ib_warm_layers'])}): "
         f"{kb(r['ib_warm_bytes'])} compressed, {kb(r['ib_warm_unpacked'])} tar",
         f"{r['docker_warm_layers']} of {r['docker_layer_count']} layers: {kb(r['docker_warm_gzip_bytes'])} gzip, "
         f"{kb(r['docker_warm_tar_bytes'])} tar"),
        ("image size, compressed", mb(r["ib_compressed"]),
         f"{mb(r['docker_gzip_bytes'])} (gzip -6 of the `docker save` layers)"),
        ("image size, unpacked",
         f"{mb(r['ib_docker_size'])} (`docker image inspect` once loaded); layer tars {mb(r['ib_unpacked'])}",
         f"{mb(r['docker_size'])} (`docker image inspect`); layer tars {mb(r['docker_tar_bytes'])}"),
        ("clean builds give the same digest",
         f"{yes(same_ib)}: 4 stores (2 empty, 2 with only the os + runtime layers), "
         f"all {r['ib_digests'][0][7:19]}",
         f"{yes(same_docker)}: image IDs {r['docker_ids'][0][7:19]} and {r['docker_ids'][1][7:19]}; "
         f"{r['docker_same_layers']} of {r['docker_layer_count']} layer diff_ids equal"),
        ("image answers /health", yes(r["ib_serves"]), yes(r["docker_serves"])),
        ("warm, app-only commit, build + push to the loopback registry (s)",
         f"{seconds(r['ib_bake_push'])} (bake {seconds(r['ib_bake_only'])})",
         f"{seconds(r['docker_build_push'])} (build {seconds(r['docker_build_only'])})"),
        ("  faster by", f"{sum(r['docker_build_push']) / sum(r['ib_bake_push']):.1f}x (goal 3x)", ""),
    ]
    lines = ["| | imagebuild bake | docker build (legacy builder) |", "| --- | --- | --- |"]
    lines += [f"| {what} | {ours} | {theirs} |" for what, ours, theirs in rows]
    lines += ["", "where a warm bake + push spends its time (one more app-only commit under cProfile, "
              "which slows it; phases overlap: a layer's build is inside the layers, git runs inside read input):"]
    lines += [f"- {label}: {value:.3f} s" for label, value in r["ib_bake_push_breakdown"].items()]
    return "\n".join(lines) + "\n\n" + one_process_table(r)


def one_process_table(r: dict) -> str:
    """The warm rounds in two processes and in one, wall and CPU seconds, and the profiled one."""
    def both(wall: list[float], cpu: list[float]) -> str:
        return f"{seconds_fine(wall)} (CPU {seconds_fine(cpu)})"

    two = [b + p for b, p in zip(r["two_bake"], r["two_push"])]
    two_cpu = [b + p for b, p in zip(r["two_bake_cpu"], r["two_push_cpu"])]
    lines = ["| warm round, app-only commit (s) | wall (CPU) |", "| --- | --- |",
             f"| `imagebuild bake` | {both(r['two_bake'], r['two_bake_cpu'])} |",
             f"| `imagebuild push` | {both(r['two_push'], r['two_push_cpu'])} |",
             f"| bake + push, two processes | {both(two, two_cpu)} |",
             f"| `imagebuild bake --push`, one process | {both(r['one'], r['one_cpu'])} |",
             "", "where a profiled `bake --push` spends its time (cProfile slows it; phases overlap):"]
    lines += [f"- {label}: {value:.3f} s" for label, value in r["one_breakdown"].items()]
    return "\n".join(lines)


def seconds_fine(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def preflight() -> None:
    if os.geteuid() != 0:
        sys.exit("bench: run as root: the Debian layers are built by mmdebstrap --mode=root")
    for tool in ("docker", "umoci", "mmdebstrap", "git", "tar"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is not installed (run `make setup`)")
    try:
        run(["docker", "info", "--format", "{{.ServerVersion}}"], 30)
    except Failed as exc:
        sys.exit(f"bench: the Docker engine does not answer (run `make services`): {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores, logs)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    parser.add_argument("--warm-only", action="store_true",
                        help="only the warm rounds, two processes and one, on the tests' cached Debian layers")
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds with --warm-only (default 3)")
    args = parser.parse_args()
    if not args.warm_only:
        preflight()
    # Byte-compiled first, as installing a wheel does: where PYTHONDONTWRITEBYTECODE is set, an editable
    # checkout would otherwise compile its modules again on every timed run (~0.1 s of a warm bake).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "imagebuild")], check=True)
    work = Path(tempfile.mkdtemp(prefix="imagebuild-bench-bake-"))
    bench = Bench(work)
    try:
        results = bench.warm_only(args.rounds) if args.warm_only else bench.measure()
    except Failed as exc:
        sys.exit(f"bench: {exc}\n(commands and their output: {bench.log})" if args.keep else f"bench: {exc}")
    finally:
        bench.cleanup()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    revision = git(REPO, "rev-parse", "--short", "HEAD").strip()
    if args.warm_only:
        print(f"examples/flask-hello at imagebuild {revision}; {os.cpu_count()} CPUs; load average "
              f"{os.getloadavg()[0]:.1f}; warm rounds only\n")
        print(one_process_table(results))
        if args.json:
            print(json.dumps(results, indent=2, sort_keys=True))
        return
    docker_version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
    lock = (f"imagebuild.lock resolved in {results['lock_seconds']:.1f} s before timing"
            if "lock_seconds" in results else "the example's imagebuild.lock")
    print(f"examples/flask-hello at imagebuild {revision}; {os.cpu_count()} CPUs; docker {docker_version}; {lock}")
    print()
    print(table(results))
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
