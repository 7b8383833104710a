"""The fleet keys of `deploy:`: how many hosts swap at once, the canary and its wait.

Parsed here, at the recipe's rank, so the loader refuses a bad value with one
line when the recipe loads; release/deploy/fleet.py plans and runs the waves.
"""

from __future__ import annotations

import re

from imagebuild.errors import UserError
from imagebuild.frozen import frozen

_COUNT = re.compile(r"^[0-9]+\Z")
_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%\Z")
# 90, 90s, 2m, 1h, 1m30s: whole units, largest first.
_DURATION = re.compile(r"^(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?\Z")
DURATION_FORM = "write seconds (90) or a duration such as 30s, 2m or 1m30s"
BATCH_FORM = "write a host count such as 2, or a share of the hosts such as 25%"


@frozen
class BatchSize:
    """A fixed number of hosts, or a share of them (rounded down, never below one host)."""

    count: int | None = None
    percent: float | None = None

    def of(self, hosts: int) -> int:
        if self.count is not None:
            return max(1, min(self.count, hosts))
        return max(1, min(hosts, int(hosts * (self.percent or 0) / 100)))

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def parse_batch(text: str) -> BatchSize:
    value = str(text).strip()
    if _COUNT.match(value):
        if int(value) < 1:
            raise UserError(f"{value!r} swaps no host at all", hint=BATCH_FORM)
        return BatchSize(count=int(value))
    found = _PERCENT.match(value)
    if found:
        percent = float(found.group(1))
        if not 0 < percent <= 100:
            raise UserError(f"{value!r} is not a share between 0% and 100%", hint=BATCH_FORM)
        return BatchSize(percent=percent)
    raise UserError(f"{value[:40]!r} is neither a host count nor a percentage", hint=BATCH_FORM)


def parse_duration(text: str) -> int:
    """Seconds in `text`: a bare number of seconds, or h/m/s units (30s, 2m, 1m30s)."""
    value = str(text).strip()
    found = _DURATION.match(value) if value else None
    if not found or not any(found.groupdict().values()):
        if _COUNT.match(value):
            return int(value)
        raise UserError(f"{value[:40]!r} is not a duration", hint=DURATION_FORM)
    parts = {unit: int(amount or 0) for unit, amount in found.groupdict().items()}
    return parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
