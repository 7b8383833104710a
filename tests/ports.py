"""Loopback ports for the servers the tests start (sshd, registries, nginx fronts, qemu, ...).

A port is checked free and then handed to another process, which binds it a moment
later. Ports come from below the kernel's ephemeral range, so in that moment no
outgoing connection and no port Docker publishes with `-p 127.0.0.1::PORT` can take
it, and none is handed out twice in one test run.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOWEST = 20000
_handed: set[int] = set()
_pick = random.Random(os.getpid())


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    ceiling = _ephemeral_floor()
    if ceiling - LOWEST >= 1000:
        for _ in range(500):
            port = _pick.randrange(LOWEST, ceiling)
            if port not in _handed and _bindable(port):
                _handed.add(port)
                return port
    # An unusual ephemeral range: let the kernel choose.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
