"""The server kinds and runtime versions a recipe can name, and what each kind needs. No I/O."""

from __future__ import annotations

import re

from imagebuild.frozen import frozen


@frozen
class ServerKind:
    name: str
    runtime: str | None          # the runtime.* key it needs, if any
    stock: str | None            # the stock recipe holding its templates
    needs_app: bool              # server.app must be set
    options: tuple[str, ...]     # the server.options keys it understands
    numeric: tuple[str, ...] = ()  # the options that must be whole numbers


KINDS: dict[str, ServerKind] = {kind.name: kind for kind in (
    ServerKind("gunicorn", runtime="python", stock="python-wsgi", needs_app=True,
               options=("host", "timeout", "graceful_timeout", "keepalive", "threads", "log_level"),
               numeric=("timeout", "graceful_timeout", "keepalive", "threads")),
    ServerKind("uvicorn", runtime="python", stock="python-asgi", needs_app=True,
               options=("host", "timeout_keep_alive", "log_level", "root_path"),
               numeric=("timeout_keep_alive",)),
    ServerKind("nginx", runtime=None, stock="static-nginx", needs_app=False,
               options=("host", "index", "client_max_body_size", "worker_processes")),
    ServerKind("java", runtime="java", stock="java-jar", needs_app=True,
               options=("java_options",)),
    ServerKind("node", runtime="node", stock="node-http", needs_app=True,
               options=("node_options",)),
    ServerKind("command", runtime=None, stock=None, needs_app=False, options=()),
)}

# Where rendered server configuration lands inside the image.

# The version forms runtime.* takes (matched whole), with an example of each for hints.
RUNTIME_VERSIONS: dict[str, tuple[re.Pattern[str], str]] = {
    "python": (re.compile(r"3\.\d+"), "3.11"),
    "java": (re.compile(r"\d+"), "17"),
    "node": (re.compile(r"\d+"), "18"),
}
