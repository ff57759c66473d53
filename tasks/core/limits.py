"""Checks of an expanded plan against the policy's generation limits."""

from __future__ import annotations

from policies.model import Policy
from tasks.core.errors import PolicyError
from tasks.core.manifest import Plan


def check_plan(plan: Plan, policy: Policy) -> None:
    """Raise PolicyError listing every way the plan breaks the policy (model not allowed, images too big).

    The candidate count is checked earlier, by `load_plan(path, max_candidates)`, before the plan is expanded.
    """
    problems: list[str] = []
    limits = policy.generation
    for model in sorted({job.model for job in plan.jobs}):
        if not limits.allows_model(model):
            problems.append(f"model {model!r} is not allowed; allowed_models: {', '.join(limits.allowed_models)}")
    for job in plan.jobs:
        pixels = job.width * job.height
        if pixels > limits.max_pixels:
            problems.append(
                f"prompt {job.prompt_id} asks for {job.width}x{job.height} = {pixels} pixels, over max_pixels "
                f"{limits.max_pixels}"
            )
            break
    if problems:
        raise PolicyError(f"{plan.source} breaks the policy:\n" + "\n".join(f"  {p}" for p in problems))


def finalize_warnings(plan: Plan, policy: Policy) -> list[str]:
    """Ways the plan's images cannot be finalized under the policy (too small to watermark, with no upscale)."""
    from policies.watermark import MIN_SIDE

    if not policy.watermark.enabled or policy.watermark.upscale_small:
        return []
    small = sorted({(job.width, job.height) for job in plan.jobs if min(job.width, job.height) < MIN_SIDE})
    if not small:
        return []
    sizes = ", ".join(f"{w}x{h}" for w, h in small)
    return [
        f"{sizes} images are below the watermark's {MIN_SIDE} px minimum and the policy does not upscale "
        "(watermark.upscale_small: false): they cannot be finalized. Generate at least "
        f"{MIN_SIDE} px, or set watermark.upscale_small: true"
    ]
