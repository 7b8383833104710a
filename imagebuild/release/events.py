"""What a deploy reports as it goes: `TIME TARGET STEP: message` lines, kept for --json too.

The SSH rollout (release/deploy/) names a host as the target, the cluster rollout (release/kubernetes/)
its context and namespace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Event:
    time: str
    host: str
    step: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"{self.time} {self.host} {self.step}: {self.message}"


class Events:
    def __init__(self, listener: Callable[[Event], None] | None = None):
        self.listener = listener
        self.items: list[Event] = []

    def emit(self, host: object, step: str, message: str) -> Event:
        event = Event(now(), str(host), step, message)
        self.items.append(event)
        if self.listener:
            self.listener(event)
        return event
