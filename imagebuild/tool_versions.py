"""A tool's `--version` answer, remembered per binary so a warm bake does not start it to ask.

The key is the binary's resolved path, mtime and size: upgrading the tool
changes them, and the next call asks again. The answers live in one small JSON
file under the user's cache directory; an unreadable file just means asking.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from imagebuild.atomic import write_atomically


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imagebuild" / "tool-versions.json"


def tool_version(binary: str, probe: Callable[[], str]) -> str:
    """`probe()`'s answer for `binary`, from the cache while the binary is unchanged."""
    real = os.path.realpath(binary)
    try:
        stat = os.stat(real)
    except OSError:
        return probe()
    key = f"{real}:{stat.st_mtime_ns}:{stat.st_size}"
    path = _cache_file()
    try:
        known = json.loads(path.read_text("utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    answer = probe()
    # Entries of replaced binaries are dropped with the new one written.
    kept = {k: v for k, v in known.items() if not k.startswith(real + ":")}
    kept[key] = answer
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, (json.dumps(kept, indent=1, sort_keys=True) + "\n").encode())
    except OSError:
        pass    # a read-only cache only costs the probe next time
    return answer
