"""How the deploy finds an nginx master's workers on a host: from /proc, while other processes come and go."""

from __future__ import annotations

import os
import subprocess

from imagebuild.release.deploy.front import CHILDREN_AWK


def test_a_process_gone_between_the_glob_and_the_read_does_not_hide_the_workers_after_it(tmp_path):
    # Two "workers" of this test process, and before them in the list a status file that is gone by the time
    # awk reads it, as when a short-lived process exits right after the shell expanded /proc/[0-9]*/status.
    # mawk stopped at the first file it could not open: the deploy saw no old workers to wait for, and
    # stopped the old container while they still sent it requests (HTTP 502).
    workers = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    try:
        gone = tmp_path / "4194305" / "status"
        not_a_child = "/proc/1/status"
        files = [str(gone), *(f"/proc/{worker.pid}/status" for worker in workers), not_a_child]
        done = subprocess.run(["awk", "-v", f"m={os.getpid()}", CHILDREN_AWK, *files], capture_output=True, text=True)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == [f"worker {worker.pid}" for worker in workers]
