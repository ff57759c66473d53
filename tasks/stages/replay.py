"""Regenerate one candidate from its ledger record and compare its pixels with the recorded digest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import LedgerError
from tasks.core.files import write_atomic
from tasks.stages.generate import (
    CandidateSpec,
    choose_runtime,
    encode_png,
    load_pipeline,
    pixel_sha256,
    run_pipeline,
)
from tasks.stages.models import resolve_model
from tasks.storage.ledger import CandidateRow


@dataclass(frozen=True)
class ReplayResult:
    """Outcome of a replay: whether pixels and model are the same as recorded."""

    candidate_id: str
    run_id: str
    recorded_pixel_sha256: str
    replayed_pixel_sha256: str
    model_identity_matches: bool
    recorded_device: str
    replay_device: str
    output_path: str | None

    @property
    def matches(self) -> bool:
        """Whether the regenerated pixels are bit-identical to the recorded ones."""
        return self.recorded_pixel_sha256 == self.replayed_pixel_sha256


def replay_candidate(
    row: CandidateRow, device: str = "auto", dtype: str = "auto", out: Path | None = None
) -> ReplayResult:
    """Regenerate `row`'s image with its recorded parameters; optionally save it to `out`."""
    if row.pixel_sha256 is None:
        raise LedgerError(f"candidate {row.candidate_id} was never generated (state {row.state}); nothing to replay.")
    source = resolve_model(row.model_ref)
    runtime = choose_runtime(device, dtype)
    loaded = load_pipeline(source, runtime)
    spec = CandidateSpec.from_record(row)
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise LedgerError(f"--out {out} must be a file path in an existing folder.")
    image = run_pipeline(loaded, [spec])[0]
    if out is not None:
        try:
            write_atomic(out, encode_png(image))
        except OSError as exc:
            raise LedgerError(f"cannot write the replayed image to {out}: {exc.strerror or exc}.") from None
    return ReplayResult(
        candidate_id=row.candidate_id,
        run_id=row.run_id,
        recorded_pixel_sha256=row.pixel_sha256,
        replayed_pixel_sha256=pixel_sha256(image),
        model_identity_matches=source.identity == row.model_identity,
        recorded_device=str(row.generation.get("device", "?")),
        replay_device=runtime.device,
        output_path=str(out) if out else None,
    )
