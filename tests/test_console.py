"""The CLI's progress columns: a rate and an ETA from the first finished item, not after rich's sampling window."""

from __future__ import annotations

from types import SimpleNamespace

from cli.console import eta_column_class, rate_column_class


def _task(completed: float, elapsed: float | None, total: float = 24, speed: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        completed=completed, elapsed=elapsed, total=total, speed=speed, finished_speed=None, finished=completed >= total
    )


def test_rate_and_eta_show_after_the_first_item() -> None:
    rate, eta = rate_column_class()(), eta_column_class()()
    assert str(rate.render(_task(0, 1.0))) == "   -/s"
    assert str(eta.render(_task(0, 1.0))) == "eta -:--:--"
    assert str(rate.render(_task(2, 4.0))) == "0.50/s"  # no rich speed sample yet: the average so far
    assert str(eta.render(_task(2, 4.0))) == "eta 0:00:44"  # 22 left at 0.5/s
    assert str(rate.render(_task(2, 4.0, speed=3.0))) == "3.00/s"  # rich's recent speed wins once it has one
    assert str(eta.render(_task(24, 10.0))) == ""


def test_eta_counts_hours() -> None:
    assert str(eta_column_class()().render(_task(1, 600.0, total=100))) == "eta 16:30:00"
