"""flows.fan_out.in_flight: every call made once, a bounded number at a time, results in order, failures raised."""

from __future__ import annotations

import threading
import time

import pytest
from prefect import flow, task

from flows.fan_out import in_flight

_lock = threading.Lock()
_running = {"now": 0, "most": 0, "calls": 0}


@task
def _work(value: int, fail: bool) -> int:
    with _lock:
        _running["now"] += 1
        _running["calls"] += 1
        _running["most"] = max(_running["most"], _running["now"])
    time.sleep(0.05 * (value % 3))  # finish out of order
    with _lock:
        _running["now"] -= 1
    if fail:
        raise ValueError(f"call {value} failed")
    return value * 10


@flow
def _fan(count: int, slots: int, failing: int | None) -> list[int]:
    return in_flight(_work, [(n, n == failing) for n in range(count)], slots)


def setup_function() -> None:
    _running.update(now=0, most=0, calls=0)


def test_results_come_back_in_call_order_with_at_most_slots_in_flight() -> None:
    assert _fan(9, 3, None) == [n * 10 for n in range(9)]
    assert _running["calls"] == 9 and 1 < _running["most"] <= 3


def test_a_failure_is_raised_after_the_calls_in_flight_end_and_nothing_new_starts() -> None:
    with pytest.raises(ValueError, match="call 1 failed"):
        _fan(30, 2, 1)
    assert _running["now"] == 0 and _running["calls"] < 30
