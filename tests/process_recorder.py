"""Run the real imagebuild CLI, writing down every process it starts and how long each ran.

    python -m tests.process_recorder RECORD.json lock APP
    python -m tests.process_recorder RECORD.json -c CODE      (CODE instead of the CLI)

An audit hook sees each `subprocess.Popen` (whatever starts it: pip, apt-get, mmdebstrap, git),
and `subprocess.run`, through which imagebuild runs them, is timed. At exit RECORD.json holds
{"started": [[program, argv...]], "timed": [[program, seconds]], "inside": seconds since start,
"cpu_self": ..., "cpu_children": ...}. A real process, real children: only the bookkeeping is added.
The lock tests and bench/lock.py use it.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import subprocess
import sys
import time


def program(argv) -> str:
    """A command's name: the file run, or for `python -m NAME` the module."""
    argv = [argv] if isinstance(argv, (str, bytes, os.PathLike)) else list(argv)
    name = os.path.basename(str(argv[0]))
    if name.startswith("python") and "-m" in argv[:-1]:
        return str(argv[argv.index("-m") + 1])
    return name


def main() -> int:
    started_at = time.perf_counter()
    record, args = sys.argv[1], sys.argv[2:]
    started: list[list[str]] = []
    timed: list[list] = []

    def hook(event: str, details: tuple) -> None:
        if event == "subprocess.Popen":
            argv = details[1] if details[1] is not None else [details[0]]
            started.append([program(argv), *map(str, argv)])

    sys.addaudithook(hook)
    original = subprocess.run

    def run(*run_args, **kwargs):
        begin = time.perf_counter()
        try:
            return original(*run_args, **kwargs)
        finally:
            timed.append([program(run_args[0] if run_args else kwargs["args"]), time.perf_counter() - begin])

    subprocess.run = run

    def write() -> None:
        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(record, "w", encoding="utf-8") as out:
            json.dump({"started": started, "timed": timed, "inside": time.perf_counter() - started_at,
                       "cpu_self": me.ru_utime + me.ru_stime,
                       "cpu_children": children.ru_utime + children.ru_stime}, out)

    atexit.register(write)
    if args[:1] == ["-c"]:
        exec(compile(args[1], "<-c>", "exec"), {})
        return 0
    sys.argv = ["imagebuild", *args]
    from imagebuild.cli.main import main as cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
