"""What counts as an interruption of a flow: Ctrl-C, SIGTERM (as AssetMint's or as Prefect's exception), or any
error that follows a stop signal (a stage that was unwinding when the signal arrived)."""

from __future__ import annotations

from prefect.exceptions import TerminationSignal

from tasks.core import interrupts


def is_interruption(exc: BaseException) -> bool:
    """True when `exc` ends a flow because someone stopped it, not because something failed."""
    # Inside a flow Prefect's engine replaces the SIGTERM handler with its own, which raises TerminationSignal.
    return isinstance(exc, KeyboardInterrupt | TerminationSignal) or interrupts.received() is not None
