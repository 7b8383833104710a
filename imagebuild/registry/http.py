"""httpx, imported without its command-line client.

httpx's package imports its own CLI (`httpx._main`) whenever click, rich and pygments are installed,
as they are beside typer: some 50 ms of every registry command spent on a tool it never runs. Marking
that module absent makes httpx fall back to its stub, which is all it keeps when they are missing.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)   # None: `import httpx._main` raises ImportError

import httpx  # noqa: E402  (after the marker above)

__all__ = ["httpx"]
