"""Registry benchmark: imagebuild push and promote side by side with docker and skopeo.

In one run, against the loopback registry (default 127.0.0.1:5000) behind a
counting proxy, it measures:

  push       a fresh image (busybox layer, an incompressible "runtime" layer of
             --size-mb, a small app layer): `imagebuild push` vs `docker push`
  re-push    the next commit, which changes only the app layer
  promote    the same digest under a new tag in the same repository:
             `imagebuild promote` vs `skopeo copy` vs `docker pull` + `docker tag` + `docker push`
  promote-x  into a second repository of the same registry (imagebuild mounts)

For each it reports wall time, HTTP requests and bytes up and down, as the
proxy saw them. docker works on a copy of the same image loaded with
`docker load`; it recompresses layers on push, so its byte counts differ a
little for that reason alone. The imagebuild rows are whole CLI runs, Python
start-up included; the "start-up only" row shows that share.

    python bench/registry.py [--registry 127.0.0.1:5000] [--size-mb 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from tests.registry_support.images import write_app_image  # noqa: E402
from tests.registry_support.proxy import FaultProxy  # noqa: E402

RECIPE = """name: hello
registry: {home}
server:
  kind: command
  command: ["/bin/busybox", "echo", "hello"]
environments:
  - name: dev
  - name: test
    registry: {second}
"""


def sh(*cmd: str, env: dict | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def imagebuild(*args: str, store: Path) -> str:
    return sh(sys.executable, "-m", "imagebuild", *args, env={"IMAGEBUILD_STORE": str(store)})


class Meter:
    def __init__(self, proxy: FaultProxy):
        self.proxy = proxy
        self.rows: list[dict] = []

    def measure(self, operation: str, tool: str, *steps) -> None:
        self.proxy.log.clear()
        start = time.perf_counter()
        for step in steps:
            step()
        seconds = time.perf_counter() - start
        log = self.proxy.log
        self.rows.append({"operation": operation, "tool": tool, "seconds": round(seconds, 2),
                          "requests": log.requests, "bytes_up": log.bytes_sent, "bytes_down": log.bytes_received})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=os.environ.get("IMAGEBUILD_TEST_REGISTRY", "127.0.0.1:5000"))
    parser.add_argument("--size-mb", type=int, default=64, help="size of the incompressible runtime layer")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    store_dir = work / "store"
    store = LayoutStore(store_dir).ensure()
    filler = args.size_mb * 1024 * 1024
    v1 = write_app_image(store, "hello", "v1", message="one", filler_bytes=filler)
    v2 = write_app_image(store, "hello", "v2", message="two", filler_bytes=filler)
    run_id = uuid.uuid4().hex[:8]
    proxy = FaultProxy(args.registry).start()
    meter = Meter(proxy)
    ours = f"{proxy.address}/bench-{run_id}/ib/hello"
    theirs = f"{proxy.address}/bench-{run_id}/docker/hello"
    docker_tags = []
    try:
        for version, ref_name in (("v1", v1), ("v2", v2)):
            archive = work / f"{version}.tar"
            write_docker_archive(store, store.resolve(ref_name).digest, [f"{theirs}:{version}"], str(archive))
            sh("docker", "load", "-i", str(archive))
            docker_tags.append(f"{theirs}:{version}")

        meter.measure("start-up only", "imagebuild images", lambda: imagebuild("images", store=store_dir))
        meter.measure("push fresh image", "imagebuild push", lambda: imagebuild("push", v1, "--to", ours, store=store_dir))
        meter.measure("push fresh image", "docker push", lambda: sh("docker", "push", f"{theirs}:v1"))
        meter.measure("re-push, app-only commit", "imagebuild push", lambda: imagebuild("push", v2, "--to", ours, store=store_dir))
        meter.measure("re-push, app-only commit", "docker push", lambda: sh("docker", "push", f"{theirs}:v2"))

        recipe_dir = work / "app"
        recipe_dir.mkdir()
        home = f"{proxy.address}/bench-{run_id}/ib"
        (recipe_dir / "imagebuild.yaml").write_text(RECIPE.format(home=home, second=f"{proxy.address}/bench-{run_id}/ib-test"))
        recipe = str(recipe_dir / "imagebuild.yaml")
        meter.measure("promote (same repository)", "imagebuild promote",
                      lambda: imagebuild("promote", "v1", "--to", "dev", "--recipe", recipe, store=store_dir))
        meter.measure("promote (same repository)", "skopeo copy",
                      lambda: sh("skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                                 f"docker://{ours}:v1", f"docker://{ours}:skopeo-dev"))

        image_ids = [str(store.read_manifest(store.resolve(ref).digest).config.digest) for ref in (v1, v2)]

        def docker_retag(destination: str):
            # A machine that holds none of the image's layers yet: pull, tag, push.
            subprocess.run(["docker", "rmi", "-f", *image_ids], capture_output=True)
            sh("docker", "pull", f"{ours}:v1")
            sh("docker", "tag", f"{ours}:v1", destination)
            sh("docker", "push", destination)
            docker_tags.extend([f"{ours}:v1", destination])

        meter.measure("promote (same repository)", "docker pull+tag+push", lambda: docker_retag(f"{ours}:docker-dev"))
        second = f"{proxy.address}/bench-{run_id}"
        meter.measure("promote (second repository)", "imagebuild promote",
                      lambda: imagebuild("promote", "v1", "--to", "test", "--recipe", recipe, store=store_dir))
        meter.measure("promote (second repository)", "skopeo copy",
                      lambda: sh("skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                                 f"docker://{ours}:v1", f"docker://{second}/skopeo-test/hello:test"))
        meter.measure("promote (second repository)", "docker pull+tag+push",
                      lambda: docker_retag(f"{second}/docker-test/hello:test"))
    finally:
        proxy.stop()
        for tag in docker_tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps({"size_mb": args.size_mb, "rows": meter.rows}, indent=2))
        return
    print(f"registry benchmark: {args.size_mb} MiB runtime layer, registry {args.registry} behind a counting proxy")
    print("| operation | tool | seconds | requests | MB up | MB down |")
    print("|---|---|---:|---:|---:|---:|")
    for row in meter.rows:
        print(f"| {row['operation']} | {row['tool']} | {row['seconds']:.2f} | {row['requests']} | "
              f"{row['bytes_up'] / 1e6:.3f} | {row['bytes_down'] / 1e6:.3f} |")


if __name__ == "__main__":
    main()
