"""Java layers benchmark: bytes pushed for an app-only commit, Jib's layers against one fat jar.

On temporary git copies of examples/java-layered, with a real dependency added
(the largest jar in /usr/share/java, e.g. Debian's guava, else 4 MiB of random
bytes in a jar), each layout bakes and pushes its first commit to the local
registry (127.0.0.1:5000) through a loopback counting proxy, then a commit
that changes one class in Hello.java is rebuilt, baked and pushed again:

  layered   recipe `java:` on the build output: release dependencies, snapshot
            dependencies, resources and classes in their own layers (Jib's way)
  fat jar   the same app as one Spring Boot style fat jar in the app layer
            (the jar committed, as examples/java-hello does)

For the second push of each: the layers that changed, the blob bytes sent,
the requests, and the seconds. Jib documents the behaviour measured here:
only changed layers are pushed.

    python bench/java_layers.py [--json]

Needs root (mmdebstrap, once: the Debian layers are shared with the tests'
cache in ~/.cache/imagebuild-test), javac/jar and the registry.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.bake_support import FIRST_COMMIT_TIME, base_for, commit_all, example_repo, seed  # noqa: E402
from tests.registry_support.proxy import FaultProxy  # noqa: E402

REGISTRY = "127.0.0.1:5000"


class _Factory:
    """What base_for asks of pytest's tmp_path_factory, for a fresh-cache run."""

    def __init__(self, root: Path):
        self.root = root

    def mktemp(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True)
        return path


def progress(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def big_dependency(work: Path) -> Path:
    """The largest jar Debian installed here, or a jar of 4 MiB of random bytes."""
    candidates = [p for p in Path("/usr/share/java").glob("*.jar") if p.is_file() and not p.is_symlink()]
    if candidates:
        return max(candidates, key=lambda p: p.stat().st_size)
    jar = work / "filler-1.0.jar"
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_STORED) as out:
        out.writestr("filler.bin", os.urandom(4 << 20))
    return jar


def build(repo: Path, dependency: Path) -> None:
    """The example's build.sh, then the big dependency beside the others and in the fat jar."""
    subprocess.run(["sh", str(repo / "build.sh")], check=True, capture_output=True)
    name = re.sub(r"(-\d.*)?\.jar$", "", dependency.name) + "-1.0.jar"
    shutil.copyfile(dependency, repo / "target/dependency" / name)
    staging = repo / "target/staging/BOOT-INF/lib"
    staging.mkdir(parents=True)
    shutil.copyfile(dependency, staging / name)
    subprocess.run(["jar", "--update", "--file", str(repo / "target/app-boot.jar"), "--date=2000-01-01T00:00:00Z",
                    "-C", str(repo / "target/staging"), f"BOOT-INF/lib/{name}"], check=True, capture_output=True)
    shutil.rmtree(repo / "target/staging")


def as_fat_jar(repo: Path) -> tuple[str, ...]:
    """The recipe without `java:`: server.app is the fat jar, committed into the app layer."""
    recipe = repo / "imagebuild.yaml"
    text = re.sub(r"java:\n(  .*\n|\s*#.*\n)*", "", recipe.read_text())
    text = text.replace("server:\n", "server:\n  app: app-boot.jar\n")
    recipe.write_text(text)
    shutil.copyfile(repo / "target/app-boot.jar", repo / "app-boot.jar")
    return ("app-boot.jar",)


def bake_push(repo: Path, store: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "imagebuild", "bake", str(repo), "--store", str(store),
                           "--push", "--json"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"bake failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def measure(layout: str, work: Path, proxy: FaultProxy, factory: _Factory, dependency: Path) -> dict:
    base = base_for("java-layered", factory)
    name = f"bench-{uuid.uuid4().hex[:8]}/{layout}"

    def prepare(repo: Path) -> tuple[str, ...]:
        recipe = repo / "imagebuild.yaml"
        recipe.write_text(recipe.read_text().replace("name: java-layered", f"name: {name}\nregistry: {proxy.address}"))
        build(repo, dependency)
        return as_fat_jar(repo) if layout == "fat-jar" else ()

    repo = example_repo(work / layout, "java-layered", lock=base.lock_path, prepare=prepare)
    store = seed(work / layout / "store", base).root
    progress(f"{layout}: first commit, bake --push")
    first = bake_push(repo, store)

    source = repo / "src/main/java/hello/Hello.java"
    source.write_text(source.read_text().replace("from the classes layer", "from a changed class"))
    build(repo, dependency)
    force = ()
    if layout == "fat-jar":
        shutil.copyfile(repo / "target/app-boot.jar", repo / "app-boot.jar")
        force = ("app-boot.jar",)
    commit_all(repo, "one class changed", FIRST_COMMIT_TIME + 60, force=force)
    progress(f"{layout}: app-only commit, bake --push")
    proxy.log.clear()
    started = time.perf_counter()
    second = bake_push(repo, store)
    seconds = time.perf_counter() - started
    before = {layer["name"]: layer["digest"] for layer in first["layers"]}
    uploads = proxy.log.blob_uploads()
    return {"layout": layout, "seconds": round(seconds, 2), "requests": proxy.log.requests,
            "blob_bytes_sent": sum(exchange.sent for exchange in uploads),
            "bytes_sent": proxy.log.bytes_sent,
            "changed": [layer["name"] for layer in second["layers"] if before.get(layer["name"]) != layer["digest"]],
            "layers": len(second["layers"]), "image_bytes": sum(layer["size"] for layer in second["layers"])}


def table(rows: list[dict], dependency: Path) -> str:
    lines = [f"app-only commit (one class changed), dependency added: {dependency.name} "
             f"({dependency.stat().st_size / 1e6:.1f} MB)", "",
             "| layout | layers changed | blob bytes sent | all bytes sent | requests | bake --push |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['layout']} | {', '.join(row['changed'])} (of {row['layers']}) | "
                     f"{row['blob_bytes_sent']:,} | {row['bytes_sent']:,} | {row['requests']} | {row['seconds']} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-java-") as temp, FaultProxy(REGISTRY) as proxy:
        work = Path(temp)
        dependency = big_dependency(work)
        rows = [measure(layout, work, proxy, _Factory(work / "debian"), dependency)
                for layout in ("layered", "fat-jar")]
    print(json.dumps(rows, indent=2) if args.json else table(rows, dependency))


if __name__ == "__main__":
    main()
