"""Per-layer progress on stderr: a live bar on a terminal, plain lines in CI or a pipe.

The library reports through the small `Progress` protocol; callers that want
silence pass `Progress.quiet()`.
"""

from __future__ import annotations

import sys
from typing import TextIO


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def layer_line(name: str, cached: bool, size: int, seconds: float) -> str:
    return f"{name:<10} {'cached' if cached else 'built':<7} {human_size(size):>9} {seconds:6.1f}s"


class Progress:
    """Plain lines: one when a layer starts building, one when it is done."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self._stream = stream
        self._enabled = enabled

    @classmethod
    def quiet(cls) -> "Progress":
        return cls(enabled=False)

    @classmethod
    def for_terminal(cls, stream: TextIO | None = None, ci: bool = False) -> "Progress":
        stream = stream or sys.stderr
        if not ci and stream.isatty():
            return RichProgress(stream)
        return cls(stream)

    def _write(self, line: str) -> None:
        if self._enabled:
            stream = self._stream or sys.stderr
            stream.write(line + "\n")
            stream.flush()

    def begin(self, total_layers: int) -> None:
        pass

    def layer_started(self, name: str) -> None:
        self._write(f"{name:<10} building ...")

    def layer_done(self, name: str, cached: bool, size: int, seconds: float) -> None:
        self._write(layer_line(name, cached, size, seconds))

    def note(self, message: str) -> None:
        self._write(message)

    def end(self) -> None:
        pass


class RichProgress(Progress):
    """A bar over the layers, with each finished layer printed above it."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} layers"), TimeElapsedColumn(),
                        console=Console(file=stream), transient=True)
        self._task = None

    def begin(self, total_layers: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task("baking", total=total_layers)

    def layer_started(self, name: str) -> None:
        if self._task is not None:
            self._bar.update(self._task, description=f"building {name}")

    def layer_done(self, name: str, cached: bool, size: int, seconds: float) -> None:
        self._bar.console.print(layer_line(name, cached, size, seconds), highlight=False)
        if self._task is not None:
            self._bar.update(self._task, description="baking", advance=1)

    def note(self, message: str) -> None:
        self._bar.console.print(message, highlight=False)

    def end(self) -> None:
        self._bar.stop()
