"""The load-once helper behind every model cache: one load per key, thread-safe, failures not kept."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from tasks.core.cache import LoadOnce, load_once


def test_concurrent_callers_share_one_load() -> None:
    calls: list[str] = []
    started = threading.Event()

    @load_once
    def load(name: str) -> object:
        calls.append(name)
        started.set()
        time.sleep(0.2)  # long enough for every other thread to arrive while the load runs
        return object()

    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(load("a"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["a"]
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert load.load_counts() == {("a",): 1}


def test_distinct_keys_load_separately_and_defaults_are_part_of_the_key() -> None:
    calls: list[tuple[str, str]] = []

    @load_once
    def load(ref: str, device: str = "cpu") -> tuple[str, str]:
        calls.append((ref, device))
        return ref, device

    assert load("a") == ("a", "cpu")
    assert load("a", "cpu") is load(ref="a")
    assert load("a", device="cuda") == ("a", "cuda")
    assert load("b") == ("b", "cpu")
    assert calls == [("a", "cpu"), ("a", "cuda"), ("b", "cpu")]
    assert load.load_counts() == {("a", "cpu"): 1, ("a", "cuda"): 1, ("b", "cpu"): 1}


def test_a_key_function_chooses_what_identifies_a_load() -> None:
    calls: list[dict[str, str]] = []

    @load_once(key=lambda spec: spec["name"])
    def load(spec: dict[str, str]) -> str:
        calls.append(spec)
        return spec["name"]

    load({"name": "x", "note": "first"})
    load({"name": "x", "note": "ignored"})
    assert len(calls) == 1 and load.load_counts() == {"x": 1}


def test_a_failed_load_is_not_cached_and_reraises() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk hiccup")
        return "model"

    load = LoadOnce(flaky)
    with pytest.raises(OSError, match="disk hiccup"):
        load()
    assert load.load_counts() == {}
    assert load() == "model" and load() == "model"
    assert len(attempts) == 2 and load.load_counts() == {(): 1}


def test_clear_forgets_values_and_counts() -> None:
    @load_once
    def load() -> object:
        return object()

    first = load()
    load.clear()
    assert load.load_counts() == {}
    assert load() is not first
    assert load.load_counts() == {(): 1}


def test_the_wrapper_keeps_the_loader_name_and_docstring() -> None:
    @load_once
    def load_thing() -> None:
        """Load the thing."""

    assert load_thing.__name__ == "load_thing" and load_thing.__doc__ == "Load the thing."


@load_once
def _module_level_loader(name: str) -> str:
    return name.upper()


def test_a_decorated_loader_pickles_by_reference_like_a_function() -> None:
    _module_level_loader("a")
    assert pickle.loads(pickle.dumps(_module_level_loader)) is _module_level_loader
