"""Layer-writer benchmark: imagebuild's writer side by side with tar | gzip and tar | zstd.

Generates a tree (default about 1 GB: many small files and a few large ones,
with content that mixes random bytes and text, so it compresses about as real
software does), then writes it as a layer with each tool, twice. Reports wall
time, input throughput, output size, peak RSS of the writing processes, and
whether the two runs gave identical bytes.

    python bench/layer_writer.py [--size-mb 1024] [--tree DIR] [--keep]

Peak RSS comes from GNU time (`/usr/bin/time -f %M`): the largest of the
measured process and those it waited for (for a shell pipeline: tar and gzip).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = ("import return value self config layer digest manifest build image static int "
         "char void struct include define error path file data index tag the of and to").split()
SMALL_SHARE = 0.25  # of the total bytes, in files of 1-32 KiB
LARGE_FILE_MB = 96

IMAGEBUILD_WRITER = """
import sys
from imagebuild.oci.layer import entries_from_directory, write_layer
with open(sys.argv[2], "wb") as out:
    write_layer(entries_from_directory(sys.argv[1]), out, compression=sys.argv[3], source_date_epoch=0)
"""


def _text_pool(rng: random.Random, size: int = 8 * 1024 * 1024) -> bytes:
    """Source-code-like lines; files take slices of it (generating text per file is too slow)."""
    out, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + ";\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()


def _mixed(rng: random.Random, pool: bytes, size: int) -> bytes:
    """Alternating runs of text and random bytes: roughly half compresses well, half not at all."""
    parts, total = [], 0
    while total < size:
        run = rng.randint(512, 16384)
        if rng.random() < 0.55:
            start = rng.randrange(0, len(pool) - run)
            parts.append(pool[start:start + run])
        else:
            parts.append(rng.randbytes(run))
        total += run
    return b"".join(parts)[:size]


def generate_tree(root: Path, size_mb: int, seed: int = 1) -> tuple[int, int]:
    """Write the tree; return (file count, total bytes). The same seed gives the same tree."""
    rng = random.Random(seed)
    pool = _text_pool(rng)
    total_target = size_mb * 1024 * 1024
    small_target = int(total_target * SMALL_SHARE)
    files = written = 0
    while written < small_target:
        path = root / f"pkg{rng.randint(0, 39):02d}" / f"mod{rng.randint(0, 24):02d}" / f"f{files:06d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 32 * 1024)
        path.write_bytes(_mixed(rng, pool, size))
        files += 1
        written += size
    block = 4 * 1024 * 1024
    index = 0
    while written < total_target:
        path = root / "large" / f"blob{index:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = min(LARGE_FILE_MB * 1024 * 1024, total_target - written)
        with open(path, "wb") as handle:
            left = size
            while left:
                chunk = _mixed(rng, pool, min(block, left))
                handle.write(chunk)
                left -= len(chunk)
        files += 1
        written += size
        index += 1
    return files, written


def run_measured(command: list[str], scratch: Path) -> tuple[float, int]:
    """Run `command`; return (wall seconds, peak RSS in KiB of it and the processes it waited for).

    Measured by /usr/bin/time rather than by wait4 here: a child forked from
    this (larger) process would inherit its high-water mark across exec.
    """
    report = scratch / "rss"
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *command],
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(command)}")
    return elapsed, int(report.read_text().split()[-1])


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()


def tools(tree: Path) -> dict[str, callable]:
    def imagebuild(compression):
        return lambda out: [sys.executable, "-c", IMAGEBUILD_WRITER, str(tree), str(out), compression]

    def pipeline(compressor):
        return lambda out: ["bash", "-c", f"set -o pipefail; tar --sort=name -C '{tree}' -cf - . | {compressor} > '{out}'"]

    return {
        "imagebuild gzip (level 6)": imagebuild("gzip"),
        "tar --sort=name | gzip -6": pipeline("gzip -6"),
        "imagebuild zstd (level 3)": imagebuild("zstd"),
        "tar --sort=name | zstd -3": pipeline("zstd -3 -q -c"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the generated tree")
    parser.add_argument("--tree", type=Path, help="use (or generate once into) this directory")
    parser.add_argument("--keep", action="store_true", help="keep the generated tree and outputs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imagebuild-bench-"))
    tree = args.tree or work / "tree"
    try:
        if not tree.exists():
            started = time.perf_counter()
            count, total = generate_tree(tree, args.size_mb)
            print(f"generated {count} files, {total / 2**20:.0f} MiB in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
        total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
        count = sum(1 for p in tree.rglob("*") if p.is_file())
        rows = []
        for name, command in tools(tree).items():
            outputs, times, peaks = [], [], []
            for attempt in (1, 2):
                out = work / f"{len(rows)}-{attempt}.out"
                elapsed, peak = run_measured(command(out), work)
                outputs.append(out)
                times.append(elapsed)
                peaks.append(peak)
            same = sha256_file(outputs[0]) == sha256_file(outputs[1])
            rows.append((name, min(times), total / 2**20 / min(times), outputs[0].stat().st_size / 2**20,
                         max(peaks) / 1024, same))
            if not args.keep:
                for out in outputs:
                    out.unlink()
        print(f"input: {count} files, {total / 2**20:.0f} MiB; {os.cpu_count()} CPUs; "
              f"Python {sys.version.split()[0]}; best of 2 runs")
        print()
        print("| writer | time (s) | throughput (MiB/s) | output (MiB) | peak RSS (MiB) | two runs identical |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for name, seconds, rate, size, rss, same in rows:
            cell = name.replace("|", "\\|")  # a bare | would split the markdown cell
            print(f"| {cell} | {seconds:.1f} | {rate:.0f} | {size:.0f} | {rss:.0f} | {'yes' if same else 'NO'} |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
