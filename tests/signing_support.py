"""A skopeo that speaks sigstore (Debian 13's, unpacked by scripts/trixie-skopeo.sh and cached across
sessions in ~/.cache/imagebuild-test, keyed by the script), and the policy files it is judged with."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, run

SCRIPT = REPO_ROOT / "scripts" / "trixie-skopeo.sh"


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagebuild-test"


def trixie_skopeo_path() -> Path:
    """The wrapper that runs trixie's skopeo; unpacked once (one process at a time, under a lock)."""
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    ident = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]
    final = root / f"trixie-skopeo-{ident}"
    with open(root / f".trixie-skopeo-{ident}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # pytest-xdist workers: one unpacks, the others wait
        if not (final / "skopeo").exists() or run([str(final / "skopeo"), "--version"]).returncode != 0:
            shutil.rmtree(final, ignore_errors=True)
            done = run(["sh", str(SCRIPT), str(final)], timeout=600)
            if done.returncode != 0:
                pytest.fail(f"scripts/trixie-skopeo.sh failed:\n{done.stderr[-3000:]}")
    return final / "skopeo"


class Skopeo:
    """trixie's skopeo, with a registries.d that reads and writes sigstore attachments on `registry`."""

    def __init__(self, binary: Path, registry: str, workdir: Path):
        self.binary = binary
        self.registries_d = workdir / "registries.d"
        self.registries_d.mkdir(parents=True, exist_ok=True)
        (self.registries_d / "test.yaml").write_text(
            f"docker:\n  {registry}:\n    use-sigstore-attachments: true\n")
        self.workdir = workdir

    def policy(self, public_key: Path | None) -> Path:
        """A policy that accepts images of `registry` only under a sigstore signature by `public_key`
        (anything, when None: for pushing)."""
        if public_key is None:
            document = {"default": [{"type": "insecureAcceptAnything"}]}
        else:
            document = {"default": [{"type": "reject"}],
                        "transports": {"docker": {"": [{"type": "sigstoreSigned", "keyPath": str(public_key),
                                                        "signedIdentity": {"type": "matchRepository"}}]},
                                       "dir": {"": [{"type": "insecureAcceptAnything"}]}}}
        path = self.workdir / f"policy-{hashlib.sha256(json.dumps(document).encode()).hexdigest()[:8]}.json"
        path.write_text(json.dumps(document))
        return path

    def __call__(self, *args: str, policy: Path | None = None) -> subprocess.CompletedProcess:
        return run([str(self.binary), "--policy", str(policy or self.policy(None)),
                    "--registries.d", str(self.registries_d), *map(str, args)], timeout=120)
