"""Console output shared by every command: quiet library defaults, escaping, one progress display."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Prefect's own setting (prefect.settings.models.server.ephemeral, 20 s by default): how long a command waits for
# the ephemeral API server it starts when no PREFECT_API_URL is configured.
STARTUP_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT_S = 120


def quiet_environment(verbose: bool) -> None:
    """Defaults for clean output and a Prefect start-up wait that fits a busy machine; set before imports."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The server setting above does not reach Prefect's client-side telemetry, whose first-run notice
    # (prefect._internal.analytics.notice) prints on a terminal unless DO_NOT_TRACK is set.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Prefect's 20 s is too short on a busy machine, where importing the server alone can take that long. As an
    # environment variable this outranks a Prefect profile or prefect.toml: users change it in the environment.
    os.environ.setdefault(STARTUP_TIMEOUT_SETTING, str(DEFAULT_STARTUP_TIMEOUT_S))
    if not verbose:
        # Runs still log at INFO to the Prefect API (flow and task runs, the stages' lines); only Prefect's console
        # handler, which also serves the root logger, is held back so the terminal shows AssetMint's own output.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_SERVER_LEVEL", "CRITICAL")
        import warnings

        warnings.filterwarnings("ignore")


def escape(text: str) -> str:
    """Escape rich markup in user-provided text (prompts and names may contain square brackets)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def make_console() -> Any:
    """A rich console that does not colour numbers and paths on its own."""
    from rich.console import Console

    return Console(highlight=False)


def _average_rate(task: Any) -> float | None:
    """Items per second: rich's recent speed, else the average since the stage started (known after one item)."""
    speed = task.finished_speed or task.speed
    if speed:
        return float(speed)
    if task.completed and task.elapsed:
        return task.completed / task.elapsed
    return None


def rate_column_class() -> Any:
    """A rich progress column class showing items per second (built late: rich loads only when drawing)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second of a stage."""

        def render(self, task: Any) -> Text:
            speed = _average_rate(task)
            return Text(f"{speed:.2f}/s" if speed else "   -/s")

    return RateColumn


def eta_column_class() -> Any:
    """A rich progress column class showing the time left at the stage's rate so far."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        """Estimated time left of a stage."""

        def render(self, task: Any) -> Text:
            if task.finished:
                return Text("")
            speed = _average_rate(task)
            if not speed or task.total is None:
                return Text("eta -:--:--")
            left = round((task.total - task.completed) / speed)
            return Text(f"eta {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}")

    return EtaColumn


class RichProgress:
    """Progress sink that draws one bar per stage with done/total and rate."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


@contextmanager
def stage_bars(out: Any, rate: bool = True, eta: bool = False, label_width: int = 9) -> Iterator[None]:
    """One bar per stage (done/total, rate, elapsed, ETA) for what the code inside reports to tasks.core.progress."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.core import progress

    columns = [TextColumn(f"{{task.description:<{label_width}}}"), BarColumn(), MofNCompleteColumn()]
    if rate:
        columns.append(rate_column_class()())
    columns.append(TimeElapsedColumn())
    if eta:
        columns.append(eta_column_class()())
    with Progress(*columns, console=out, transient=False) as bars, progress.progress_sink(RichProgress(bars)):
        yield


def port_number(value: str) -> int:
    """argparse type for a TCP port: 0..65535 (0 lets the system pick a free one)."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def optional_path(value: str | None) -> Path | None:
    """A Path, or None for an option that was not given."""
    return Path(value) if value else None
