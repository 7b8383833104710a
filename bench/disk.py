"""Disk benchmark: the Flask example as a VM disk beside the same image as a container, in one run.

One bake with `--format disk --load` gives both. Then, per round:

  container   `docker run -p` of the image, until /health answers on loopback
  vm-tcg      qemu-system-x86_64 (software emulation) of the qcow2 disk, user-mode
              networking with a hostfwd, until /health answers
  vm-kvm      the same with KVM, when KVM can run the guest here

It reports the sizes side by side (container image compressed and as the engine
stores it, the qcow2 and the raw disk), the time to build the disk (the image
already baked, the kernel cached) and the seconds to a healthy app, per round and
the median.

    python bench/disk.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imagebuild.release.disk.qemu import boot_file, booted, kvm_usable, qemu_command  # noqa: E402
from imagebuild.recipe.loader import load_recipe  # noqa: E402
from tests.bake_support import EXAMPLES, example_repo, seed  # noqa: E402
from tests.debian_fixtures import _cache_dir, build_cached_base  # noqa: E402
from tests.ssh_support import free_port  # noqa: E402

BOUND = 600.0
ENVIRONMENT = "test"      # both ways are told the environment: the container by -e, the VM on its kernel command line


def healthy_after(url: str, started: float, alive) -> float:
    while time.monotonic() - started < BOUND:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                if answer.status == 200:
                    return round(time.monotonic() - started, 2)
        except OSError:
            pass
        if not alive():
            break
        time.sleep(0.2)
    sys.exit(f"bench: {url} never answered")


def run_container(image: str) -> float:
    port = free_port()
    started = time.monotonic()
    started_run = subprocess.run(["docker", "run", "-d", "--rm", "-e", f"IMAGEBUILD_ENV={ENVIRONMENT}",
                                  "-p", f"127.0.0.1:{port}:8000", image],
                                 capture_output=True, text=True)
    if started_run.returncode != 0:
        sys.exit(f"bench: docker run {image} failed: {started_run.stderr.strip()}")
    container = started_run.stdout.strip()
    try:
        return healthy_after(f"http://127.0.0.1:{port}/health", started, lambda: True)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def run_vm(disk: Path, accelerator: str, console: Path) -> float:
    port = free_port()
    started = time.monotonic()
    with booted(qemu_command(disk, port, 8000, accelerator), console) as process:
        return healthy_after(f"http://127.0.0.1:{port}/health", started, lambda: process.poll() is None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    recipe = load_recipe(EXAMPLES / "flask-hello")
    base = build_cached_base(_cache_dir(recipe.os, recipe.runtime), recipe.os, recipe.runtime)
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as scratch:
        scratch = Path(scratch)
        repo = example_repo(scratch, "flask-hello", lock=base.lock_path)
        store = seed(scratch / "store", base)
        qcow2 = scratch / "flask.qcow2"
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "imagebuild", "bake", str(repo), "--store", str(store.root),
                               "--format", "disk", "--load", "--json", "-o", f"disk:{qcow2}"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"bench: bake failed:\n{done.stderr}")
        bake_seconds = round(time.monotonic() - started, 1)
        result = json.loads(done.stdout)
        disk = result["disk"]
        disk_line = next((line for line in reversed(done.stderr.splitlines()) if line.startswith("disk ")), "")
        # the engine knows the image by its config digest, whatever happens to the tag meanwhile
        manifest = json.loads(store.read_blob(result["digest"]))
        image_id = manifest["config"]["digest"]
        inspected = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image_id],
                                   capture_output=True, text=True)
        if inspected.returncode != 0:
            sys.exit(f"bench: the engine does not have {result['image']} ({image_id}): {inspected.stderr.strip()}")
        engine_size = int(inspected.stdout)
        # a tag of our own: tests elsewhere may remove the example's NAME:VERSION while this runs
        own_tag = f"bench-disk:{uuid.uuid4().hex[:12]}"
        subprocess.run(["docker", "tag", image_id, own_tag], capture_output=True, check=True)
        subprocess.run([sys.executable, "-m", "imagebuild", "disk", "set-env", str(qcow2), ENVIRONMENT],
                       capture_output=True, check=True)
        kernel = boot_file(qcow2, "vmlinuz", scratch / "vmlinuz")
        accelerators = ["tcg"] + (["kvm"] if kvm_usable(kernel) else [])
        rounds: dict[str, list[float]] = {"container": []}
        rounds.update({f"vm-{accelerator}": [] for accelerator in accelerators})
        try:
            for number in range(args.rounds):
                rounds["container"].append(run_container(own_tag))
                for accelerator in accelerators:
                    rounds[f"vm-{accelerator}"].append(
                        run_vm(qcow2, accelerator, scratch / f"console-{accelerator}-{number}.log"))
        finally:
            subprocess.run(["docker", "rmi", own_tag], capture_output=True)
    report = {
        "sizes": {"image_compressed": disk["image_size"], "image_in_engine": engine_size,
                  "disk_qcow2": disk["qcow2_size"], "disk_raw": disk["raw_size"]},
        "bake_with_disk_seconds": bake_seconds, "disk_progress": disk_line.strip(),
        "kvm": "kvm" in accelerators,
        "seconds_to_healthy": {name: {"rounds": values, "median": statistics.median(values)}
                               for name, values in rounds.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    mb = 1_000_000
    sizes = report["sizes"]
    print(f"container image: {sizes['image_compressed'] / mb:.1f} MB compressed, "
          f"{sizes['image_in_engine'] / mb:.1f} MB in the engine")
    print(f"disk: qcow2 {sizes['disk_qcow2'] / mb:.1f} MB, raw {sizes['disk_raw'] / mb:.1f} MB")
    print(f"bake --format disk (base cached): {bake_seconds} s   [{report['disk_progress']}]")
    if not report["kvm"]:
        print("KVM: cannot run the guest here; VM rows are software emulation only")
    print(f"{'start to /health':<18} {'median s':>9}  rounds")
    for name, row in report["seconds_to_healthy"].items():
        print(f"{name:<18} {row['median']:>9.2f}  {row['rounds']}")


if __name__ == "__main__":
    main()
