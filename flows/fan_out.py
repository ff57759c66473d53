"""Run one Prefect task over many inputs with a bounded number of them in flight."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from prefect import Task
from prefect.futures import PrefectFuture, as_completed

from tasks.core.interrupts import interruptible

R = TypeVar("R")


@interruptible  # only waiting: a stop signal ends it at once; the calls in flight finish their own work
def _first_done(running: list[PrefectFuture[Any]]) -> PrefectFuture[Any]:
    return next(as_completed(running))


def in_flight(task: Task[Any, R], calls: Sequence[tuple[Any, ...]], slots: int) -> list[R]:
    """Submit `task(*args)` for every args tuple, at most `slots` at a time; the results in the order of `calls`.

    The first failure is raised once the calls already in flight have ended; no new call starts after it.
    """
    results: dict[int, R] = {}
    running: dict[PrefectFuture[R], int] = {}
    queued = list(enumerate(calls))
    failure: BaseException | None = None
    while queued or running:
        while queued and failure is None and len(running) < max(1, slots):
            index, args = queued.pop(0)
            running[task.submit(*args)] = index
        if not running:
            break
        finished = _first_done(list(running))
        index = running.pop(finished)
        try:
            results[index] = finished.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the other calls end
            failure = failure or exc
    if failure is not None:
        raise failure
    return [results[index] for index in range(len(calls))]
