"""Progress reporting: stages call `report`; whoever drives the run (CLI, tests) installs a sink."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressSink(Protocol):
    """Receives progress: a stage name, how much of it is done, and its total."""

    def update(self, stage: str, done: int, total: int) -> None: ...


class _NullSink:
    def update(self, stage: str, done: int, total: int) -> None:
        return None


_sink: ProgressSink = _NullSink()


def report(stage: str, done: int, total: int) -> None:
    """Tell the current sink how far a stage is."""
    _sink.update(stage, done, total)


@contextmanager
def progress_sink(sink: ProgressSink) -> Iterator[None]:
    """Install `sink` for the duration of the block."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous
