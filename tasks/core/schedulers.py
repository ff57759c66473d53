"""Named scheduler presets, read from tasks/core/data/schedulers.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class SchedulerPreset:
    """A named scheduler: the diffusers class to use (None = keep the pipeline's own) and config overrides."""

    name: str
    class_name: str | None
    config: dict[str, Any] = field(default_factory=dict)


@cache
def scheduler_presets() -> dict[str, SchedulerPreset]:
    """All named scheduler presets, by name."""
    raw = yaml.safe_load(resources.files("tasks.core").joinpath("data/schedulers.yaml").read_text(encoding="utf-8"))
    return {
        name: SchedulerPreset(name=name, class_name=entry.get("class"), config=dict(entry.get("config", {})))
        for name, entry in raw.items()
    }


def scheduler_names() -> list[str]:
    """The valid scheduler names, sorted."""
    return sorted(scheduler_presets())


def get_scheduler_preset(name: str) -> SchedulerPreset:
    """The preset called `name`; ValueError listing the valid names otherwise."""
    presets = scheduler_presets()
    if name not in presets:
        raise ValueError(f"unknown scheduler {name!r}; valid schedulers: {', '.join(scheduler_names())}")
    return presets[name]
