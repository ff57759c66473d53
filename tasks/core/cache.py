"""Load-once caching for models and other expensive per-process resources: one load per key, thread-safe."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Hashable
from typing import Generic, ParamSpec, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")


class LoadOnce(Generic[P, R]):
    """Call a loader at most once per key and keep the result for the life of the process.

    Two threads asking for the same key at once get one load; different keys load independently. A load that
    raises is not cached: the exception reaches the caller and the next call tries again.
    """

    def __init__(self, loader: Callable[P, R], key: Callable[P, Hashable] | None = None) -> None:
        self._loader = loader
        self._key = key
        self._signature = inspect.signature(loader)
        self._values: dict[Hashable, R] = {}
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._loads: dict[Hashable, int] = {}
        self._lock = threading.Lock()  # guards the three dicts; never held while a loader runs
        functools.update_wrapper(self, loader)

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> Hashable:
        """The cache key of a call: the key function's result, else the bound arguments with defaults applied."""
        if self._key is not None:
            return self._key(*args, **kwargs)
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key = self.key_for(*args, **kwargs)
        with self._lock:
            if key in self._values:
                return self._values[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._values:  # another thread finished the load while this one waited
                    return self._values[key]
            value = self._loader(*args, **kwargs)
            with self._lock:
                self._values[key] = value
                self._loads[key] = self._loads.get(key, 0) + 1
            return value

    def __reduce__(self) -> str:
        # Pickle by reference, as for a plain function, so a decorated loader can be handed to a process pool.
        return self.__qualname__

    def load_counts(self) -> dict[Hashable, int]:
        """How many times each key was loaded since the process started (or since the last clear())."""
        with self._lock:
            return dict(self._loads)

    def clear(self) -> None:
        """Forget every loaded value and the load counts, so the next call loads again (for tests)."""
        with self._lock:
            self._values.clear()
            self._loads.clear()


@overload
def load_once(loader: Callable[P, R], *, key: None = None) -> LoadOnce[P, R]: ...


@overload
def load_once(
    loader: None = None, *, key: Callable[P, Hashable] | None = None
) -> Callable[[Callable[P, R]], LoadOnce[P, R]]: ...


def load_once(
    loader: Callable[P, R] | None = None, *, key: Callable[P, Hashable] | None = None
) -> LoadOnce[P, R] | Callable[[Callable[P, R]], LoadOnce[P, R]]:
    """Decorator: `@load_once` keys by the call's arguments, `@load_once(key=fn)` by what fn returns for them."""
    if loader is not None:
        return LoadOnce(loader, key)

    def decorate(fn: Callable[P, R]) -> LoadOnce[P, R]:
        return LoadOnce(fn, key)

    return decorate
