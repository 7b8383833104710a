"""Load benchmark: getting a large image from the local store into the Docker engine.

Side by side, in one run, on one image (a 1 GiB layer of random bytes, so no
compression helps, plus a small top layer), each in its own process so its
peak RSS is its own:

  staged     what `bake --load` did before: write the docker-archive to a
             temporary file, then hand the file to the SDK's load
  streamed   the archive written while the engine reads it (no temporary file)
  docker     `docker load -i` of the same archive, the Docker CLI as the peer
  skip       streamed again after the engine got the 1 GiB layer from another
             image: only the top layer is sent
  tagged     streamed again when the engine has the very image: only a tag
  save       the other way: `docker save` read as it arrives into a new store
             (gzip-compressing the layers), beside `docker save -o FILE`

    python bench/docker_load.py [--size-mib N] [--json]

Needs the Docker engine. Removes its images and temporary files at the end.
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

from imagebuild.build.cache import store_layer  # noqa: E402
from imagebuild.oci.layer import Entry  # noqa: E402
from imagebuild.oci.model import Image  # noqa: E402
from imagebuild.progress import human_size  # noqa: E402
from imagebuild.stores.layout import LayoutStore  # noqa: E402

CHUNK = 1 << 20

# Each mode runs in a child process; it prints one JSON line of what it did.
CHILD = r"""
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores import engine
from imagebuild.stores.archive import write_docker_archive
mode, store, digest, tag = sys.argv[2:6]
store = LayoutStore(store)
if mode == "staged":
    client = engine.connect()
    with tempfile.TemporaryDirectory(dir=sys.argv[6]) as tmp:
        path = os.path.join(tmp, "image.tar")
        write_docker_archive(store, digest, [tag], path)
        staged = os.path.getsize(path)
        with open(path, "rb") as handle:
            client.images.load(handle)
    print(json.dumps({"sent": staged, "staged": staged}))
elif mode == "save":
    engine.save_image(engine.connect(), tag, LayoutStore(sys.argv[6]))
    print(json.dumps({"sent": 0, "staged": 0}))
else:
    report = engine.load_image(store, digest, [tag])
    print(json.dumps({"sent": report.bytes_sent, "staged": 0, "layers_sent": report.layers_sent}))
"""


def child(mode: str, store: Path, digest: str, tag: str, scratch: Path) -> dict:
    """One load in its own process, under GNU time for its own peak RSS."""
    out = timed([sys.executable, "-c", CHILD, str(REPO), mode, str(store), digest, tag, str(scratch)])
    return {**json.loads(out.pop("stdout").splitlines()[-1]), **out}


def timed(argv: list[str]) -> dict:
    """A command under GNU time: wall seconds, its own peak RSS, and its stdout."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} ... failed:\n{done.stderr}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(int(done.stderr.strip().splitlines()[-1]) / 1024, 1),
            "stdout": done.stdout}


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imagebuild-bench-load-"))
    prefix = f"imagebuild-bench-load-{uuid.uuid4().hex[:8]}"
    tags = [f"{prefix}:{name}" for name in ("big", "staged", "streamed", "docker", "skip", "tagged")]
    try:
        results = run(work, args.size_mib, tags)
    finally:
        for tag in tags:
            docker("rmi", "-f", tag)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"image: one {args.size_mib} MiB layer of random bytes + a 4 KiB layer; peak RSS of the loading process")
    print(f"| mode | seconds | peak RSS | sent to the engine | archive on disk |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, row in results.items():
        print(f"| {name} | {row['seconds']} | {row['peak_rss_mib']} MiB | {human_size(row.get('sent', 0))} "
              f"| {human_size(row.get('staged', 0)) if row.get('staged') else '-'} |")


def run(work: Path, size_mib: int, tags: list[str]) -> dict:
    big_tag, staged_tag, streamed_tag, docker_tag, skip_tag, tagged_tag = tags
    store = LayoutStore(work / "store").ensure()
    payload = work / "payload"
    with open(payload, "wb") as out, open("/dev/urandom", "rb") as random:
        for _ in range(size_mib):
            out.write(random.read(CHUNK))
    entry = Entry("payload", size=payload.stat().st_size, opener=lambda: open(payload, "rb"))
    big = store_layer(store, [entry], 0, compression="none")
    payload.unlink()
    top = store_layer(store, [Entry.file("top", os.urandom(4096))], 0)
    only_big = Image(created="2025-01-01T00:00:00Z").with_layer(big.as_layer(), created_by="bench")
    image = only_big.with_layer(top.as_layer(), created_by="bench")
    big_digest = str(store.write_image(only_big).digest)
    digest = str(store.write_image(image).digest)

    def fresh() -> None:
        for tag in tags:
            docker("rmi", "-f", tag)

    results = {}
    fresh()
    results["staged"] = child("staged", store.root, digest, staged_tag, work)
    fresh()
    results["streamed"] = child("streamed", store.root, digest, streamed_tag, work)
    fresh()
    from imagebuild.stores.archive import write_docker_archive
    archive = write_docker_archive(store, digest, [docker_tag], str(work / "image.tar"))
    peer = timed(["docker", "load", "-q", "-i", str(archive)])
    peer.pop("stdout")
    results["docker"] = {**peer, "sent": archive.stat().st_size, "staged": archive.stat().st_size}
    archive.unlink()
    fresh()
    child("streamed", store.root, big_digest, big_tag, work)
    results["skip"] = child("streamed", store.root, digest, skip_tag, work)
    results["tagged"] = child("streamed", store.root, digest, tagged_tag, work)
    # The other way: `docker save` into a store (what an os.dockerfile base takes), beside docker save -o.
    results["save"] = child("save", store.root, digest, tagged_tag, work / "saved-store")
    peer = timed(["docker", "save", "-o", str(work / "saved.tar"), tagged_tag])
    peer.pop("stdout")
    results["docker save"] = {**peer, "sent": 0, "staged": (work / "saved.tar").stat().st_size}
    return results


if __name__ == "__main__":
    main()
