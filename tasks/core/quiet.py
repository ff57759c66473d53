"""Keep ML library chatter (progress bars, notices we record ourselves) out of a normal run's output."""

from __future__ import annotations


def quiet_transformers() -> None:
    """Errors only, no progress bars, from transformers (also used by sentence-transformers)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def quiet_diffusers() -> None:
    """Errors only, no progress bars, from diffusers and the transformers models it loads."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    quiet_transformers()
