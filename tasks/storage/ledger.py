"""The ledger: runs, jobs and candidates with every generation parameter, and an append-only history.

SQLite by default, any SQLAlchemy URL (PostgreSQL) by configuration. Every write happens in one transaction,
so an interrupted run leaves either the whole chunk's rows or none of them. The schema is made and upgraded by the
Alembic revisions in tasks/storage/migrations whenever a ledger is opened.

Two append-only logs, one per kind of fact: `history` holds state transitions (of runs and candidates, from_state ->
to_state), `revisions` holds values that a resumed run may replace (a run's policy; a job's keep_top_k, output_format
and prompt-screening verdict), each with the value it replaced. Values are kept apart from transitions because they
are not states, and so that the current value can stay on its row for fast reads while every earlier one is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from tasks.core import interrupts
from tasks.core.clock import Clock, SystemClock
from tasks.core.errors import LedgerError, MissingLedgerError, ReviewError
from tasks.core.states import CandidateState, RunStatus, can_transition
from tasks.storage.database import engine_options, first_line, parse_database_url, shown, sqlite_file


class Base(DeclarativeBase):
    """Declarative base of the ledger tables."""


class RunRow(Base):
    """One expanded manifest; rerunning the same manifest continues the same run."""

    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(64), index=True)
    campaign_name: Mapped[str] = mapped_column(Text)
    manifest_path: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_dir: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class JobRow(Base):
    """One prompt with resolved settings; its candidates differ only by seed."""

    __tablename__ = "jobs"
    __table_args__ = (ForeignKeyConstraint(["run_id"], ["runs.run_id"]),)
    run_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    job_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    prompt_id: Mapped[str] = mapped_column(String(64))
    variant: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    variables: Mapped[dict[str, str]] = mapped_column(JSON)
    keep_top_k: Mapped[int] = mapped_column(Integer)
    output_format: Mapped[str] = mapped_column(String(8))
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    screening: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class CandidateRow(Base):
    """One image: everything needed to reproduce it, where it is, and how it scored."""

    __tablename__ = "candidates"
    __table_args__ = (ForeignKeyConstraint(["run_id", "job_key"], ["jobs.run_id", "jobs.job_key"]),)
    run_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    candidate_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    job_key: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text)
    model_ref: Mapped[str] = mapped_column(Text)
    model_identity: Mapped[dict[str, Any]] = mapped_column(JSON)
    pipeline_kind: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    scheduler: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24), index=True)
    image_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    image_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pixel_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    generation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    clip_model: Mapped[str | None] = mapped_column(Text, nullable=True)
    clip_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    clip_cosine: Mapped[float | None] = mapped_column(Float, nullable=True)
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    safety: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    review: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EmbeddingRow(Base):
    """A candidate's image embedding, computed once by the scorer and kept for later stages."""

    __tablename__ = "embeddings"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "candidate_id"], ["candidates.run_id", "candidates.candidate_id"]),
    )
    run_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    candidate_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    clip_model: Mapped[str] = mapped_column(Text, primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class HistoryRow(Base):
    """Append-only log of every state change of a run or candidate."""

    __tablename__ = "history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(96), index=True)
    candidate_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    from_state: Mapped[str | None] = mapped_column(String(24), nullable=True)
    to_state: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RevisionRow(Base):
    """One value a run's policy or a job's tracked field took on, with the one it replaced; never updated."""

    __tablename__ = "revisions"
    __table_args__ = (
        ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        ForeignKeyConstraint(["run_id", "job_key"], ["jobs.run_id", "jobs.job_key"]),
        Index("ix_revisions_run_id_job_key", "run_id", "job_key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(96))
    job_key: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None: the run's own value
    name: Mapped[str] = mapped_column(String(32))  # "policy", or one of JOB_REVISED_FIELDS
    old: Mapped[Any] = mapped_column(JSON, nullable=True)  # None: the first value recorded
    new: Mapped[Any] = mapped_column(JSON, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))  # value_sha256(new)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: carried over by the 0.1.0 upgrade
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AssetRow(Base):
    """A candidate on its way out: its short watermark key and, once finalized, the signed file's facts."""

    __tablename__ = "assets"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "candidate_id"], ["candidates.run_id", "candidates.candidate_id"]),
        UniqueConstraint("run_id", "candidate_id"),
    )
    asset_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(96))
    candidate_id: Mapped[str] = mapped_column(String(32))
    watermark_method: Mapped[str | None] = mapped_column(String(32), nullable=True)
    payload_hex: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    final_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    final_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mime: Mapped[str | None] = mapped_column(String(32), nullable=True)
    manifest_label: Mapped[str | None] = mapped_column(Text, nullable=True)
    validation_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    signer: Mapped[str | None] = mapped_column(Text, nullable=True)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    final_width: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the delivered pixels, after any upscale
    final_height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # tasks.provenance.fingerprint
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finalized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    published: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    @property
    def final_size(self) -> dict[str, int] | None:
        """{width, height} of the finalized pixels; None when not recorded (not finalized)."""
        if self.final_width is None or self.final_height is None:
            return None
        return {"width": self.final_width, "height": self.final_height}


@dataclass(frozen=True)
class FinalizedAsset:
    """What finalization produced for one candidate (or why it failed)."""

    candidate_id: str
    ok: bool
    reason: str = ""
    watermark_method: str | None = None
    payload_hex: str | None = None
    final_path: str | None = None
    final_sha256: str | None = None
    mime: str | None = None
    manifest_label: str | None = None
    validation_state: str | None = None
    trust: str | None = None  # the person-facing trust label (tasks.provenance.trust) beside c2pa's raw state
    signer: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    final_width: int | None = None
    final_height: int | None = None
    fingerprint: bytes | None = None


@dataclass(frozen=True)
class PlannedCandidate:
    """A candidate to record before generation."""

    candidate_id: str
    job_key: str
    seed: int
    prompt: str
    negative_prompt: str
    model_ref: str
    model_identity: dict[str, Any]
    pipeline_kind: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str


@dataclass(frozen=True)
class GeneratedImage:
    """What generation produced for one candidate."""

    candidate_id: str
    image_path: str
    image_sha256: str
    pixel_sha256: str
    generation: dict[str, Any]


@dataclass(frozen=True)
class CandidateScore:
    """What scoring produced for one candidate."""

    candidate_id: str
    clip_model: str
    clip_score: float
    clip_cosine: float
    embedding: bytes
    dim: int


# Job fields a rerun may change without changing pixels (DESIGN.md, identity): updated on resume, every value kept.
JOB_REVISED_FIELDS = ("keep_top_k", "output_format", "screening")


def value_sha256(value: Any) -> str:
    """The sha256 of a JSON value's canonical form (sorted keys, no spaces), as recorded with each revision."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{Path(path).resolve().as_posix()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Ledger:
    """Transactional access to the ledger database."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, clock: Clock | None = None, create: bool = True) -> Ledger:
        """Connect to the ledger at `url`, creating (unless `create` is false) or upgrading its schema as needed.

        LedgerError when that is impossible; MissingLedgerError for a SQLite file that does not exist and may not
        be created, so that a read in the wrong folder never leaves an empty ledger behind.
        """
        parsed = parse_database_url(url)
        database_file = sqlite_file(parsed)
        if database_file is not None and not create and not database_file.exists():
            raise MissingLedgerError(str(database_file))
        if database_file is not None:
            folder = database_file.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"cannot create the ledger folder {folder}: {exc.strerror}.") from None
        from tasks.storage.migrations import upgrade_to_head

        try:
            engine = create_engine(parsed, **engine_options(parsed))
            if parsed.get_backend_name() == "sqlite":
                event.listen(engine, "connect", _sqlite_pragmas)
            try:
                upgrade_to_head(engine)
            except BaseException:
                engine.dispose()
                raise
        except (OperationalError, SQLAlchemyError, ModuleNotFoundError) as exc:
            raise LedgerError(f"cannot open the ledger at {shown(url)}: {first_line(exc)}.") from None
        return cls(engine, clock)

    @classmethod
    def open_file(cls, path: Path, clock: Clock | None = None) -> Ledger:
        """Open (or create) a SQLite ledger file."""
        return cls.open(sqlite_url(path), clock)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose changes are committed together, or not at all; a stop signal waits until it has ended."""
        with interrupts.deferred(), self._sessions.begin() as session:
            yield session

    # --- runs -------------------------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        run_id: str,
        campaign_id: str,
        campaign_name: str,
        manifest_path: str,
        manifest_sha256: str,
        policy: dict[str, Any],
        run_dir: str,
        jobs: Sequence[dict[str, Any]],
        candidates: Sequence[PlannedCandidate],
    ) -> bool:
        """Create or resume a run and record its plan; returns True when the run already existed.

        On resume the run's policy and each known job's JOB_REVISED_FIELDS present in `jobs` take this attempt's
        values; every value that differs from the recorded one is appended to the revisions, never overwritten there.
        """
        now = self.clock.now()
        with self.transaction() as session:
            run = session.get(RunRow, run_id)
            resumed = run is not None
            if run is None:
                run = RunRow(
                    run_id=run_id,
                    campaign_id=campaign_id,
                    campaign_name=campaign_name,
                    manifest_path=manifest_path,
                    manifest_sha256=manifest_sha256,
                    policy=policy,
                    run_dir=run_dir,
                    status=RunStatus.RUNNING,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                    summary={},
                )
                session.add(run)
            previous = run.status if resumed else None
            previous_policy = run.policy if resumed else None
            run.status = RunStatus.RUNNING
            run.attempts += 1
            run.updated_at = now
            run.manifest_path = manifest_path
            run.policy = policy
            session.add(
                HistoryRow(
                    run_id=run_id,
                    from_state=previous,
                    to_state=RunStatus.RUNNING,
                    at=now,
                    detail={"attempt": run.attempts},
                )
            )
            session.flush()
            self._revise(session, run, None, "policy", previous_policy, policy, now)
            known_jobs = {job.job_key: job for job in session.scalars(select(JobRow).where(JobRow.run_id == run_id))}
            changes: list[tuple[str, str, Any, Any]] = []
            for position, job in enumerate(jobs):
                row = known_jobs.get(job["job_key"])
                olds = {} if row is None else {name: getattr(row, name) for name in JOB_REVISED_FIELDS}
                if row is None:
                    row = JobRow(run_id=run_id, position=position, warnings=[], **job)
                    session.add(row)
                for name in JOB_REVISED_FIELDS:
                    if name in job:
                        setattr(row, name, job[name])
                        changes.append((row.job_key, name, olds.get(name), job[name]))
            session.flush()
            for job_key, name, old, new in changes:
                self._revise(session, run, job_key, name, old, new, now)
            session.flush()
            known = set(session.scalars(select(CandidateRow.candidate_id).where(CandidateRow.run_id == run_id)))
            for planned in candidates:
                if planned.candidate_id in known:
                    continue
                session.add(
                    CandidateRow(
                        run_id=run_id,
                        state=CandidateState.PLANNED,
                        created_at=now,
                        updated_at=now,
                        generation={},
                        **planned.__dict__,
                    )
                )
                session.add(
                    HistoryRow(
                        run_id=run_id,
                        candidate_id=planned.candidate_id,
                        from_state=None,
                        to_state=CandidateState.PLANNED,
                        at=now,
                        detail={},
                    )
                )
        return resumed

    def finish_run(self, run_id: str, status: RunStatus, summary: dict[str, Any] | None = None) -> None:
        """Record the end of a run attempt."""
        now = self.clock.now()
        with self.transaction() as session:
            run = self._run(session, run_id)
            session.add(HistoryRow(run_id=run_id, from_state=run.status, to_state=status, at=now, detail=summary or {}))
            run.status = status
            run.updated_at = now
            if summary is not None:
                run.summary = summary

    def run(self, run_id: str) -> RunRow:
        """The run row; LedgerError when unknown."""
        with self.transaction() as session:
            return self._run(session, run_id)

    def runs(self) -> list[RunRow]:
        """All runs, newest first."""
        with self.transaction() as session:
            return list(session.scalars(select(RunRow).order_by(RunRow.created_at.desc())))

    def state_counts(self, run_id: str) -> dict[str, int]:
        """Number of candidates per state in a run."""
        with self.transaction() as session:
            rows = session.execute(
                select(CandidateRow.state, func.count())
                .where(CandidateRow.run_id == run_id)
                .group_by(CandidateRow.state)
            )
            return {state: count for state, count in rows}

    def jobs(self, run_id: str) -> list[JobRow]:
        """A run's jobs in manifest order."""
        with self.transaction() as session:
            return list(session.scalars(select(JobRow).where(JobRow.run_id == run_id).order_by(JobRow.position)))

    def add_job_warning(self, run_id: str, job_key: str, warning: str) -> None:
        """Record a warning about a job (e.g. prompt truncated by the text encoder)."""
        with self.transaction() as session:
            job = self._job(session, run_id, job_key)
            if warning not in job.warnings:
                job.warnings = [*job.warnings, warning]

    # --- candidates -------------------------------------------------------------------------------------------

    def candidates(self, run_id: str, states: Iterable[CandidateState] | None = None) -> list[CandidateRow]:
        """A run's candidates (optionally only those in `states`), ordered by job and seed."""
        with self.transaction() as session:
            query = select(CandidateRow).where(CandidateRow.run_id == run_id)
            if states is not None:
                query = query.where(CandidateRow.state.in_([str(s) for s in states]))
            return list(session.scalars(query.order_by(CandidateRow.job_key, CandidateRow.seed)))

    def find_candidates(self, id_or_prefix: str) -> list[CandidateRow]:
        """Candidates whose id equals or starts with `id_or_prefix` (at least 6 characters), in any run."""
        if len(id_or_prefix) < 6:
            raise LedgerError(f"asset id {id_or_prefix!r} is too short; give at least 6 characters.")
        with self.transaction() as session:
            query = select(CandidateRow).where(CandidateRow.candidate_id.startswith(id_or_prefix, autoescape=True))
            return list(session.scalars(query.order_by(CandidateRow.created_at)))

    def history(self, run_id: str, candidate_id: str | None = None) -> list[HistoryRow]:
        """History entries of a run, or of one of its candidates, oldest first."""
        with self.transaction() as session:
            query = select(HistoryRow).where(HistoryRow.run_id == run_id)
            if candidate_id is not None:
                query = query.where(HistoryRow.candidate_id == candidate_id)
            return list(session.scalars(query.order_by(HistoryRow.id)))

    def policy_history(self, run_id: str) -> list[RevisionRow]:
        """Every distinct policy a run has had, oldest first; the last one is the run's current policy."""
        with self.transaction() as session:
            self._run(session, run_id)
            return self._revisions(session, run_id, None, "policy")

    def job_history(self, run_id: str, job_key: str) -> list[RevisionRow]:
        """Every value a job's JOB_REVISED_FIELDS have had (old and new), oldest first."""
        with self.transaction() as session:
            self._job(session, run_id, job_key)
            return self._revisions(session, run_id, job_key, None)

    def embeddings(self, run_id: str, clip_model: str) -> dict[str, bytes]:
        """Stored image embeddings of a run for one CLIP model, by candidate id."""
        with self.transaction() as session:
            rows = session.scalars(
                select(EmbeddingRow).where(EmbeddingRow.run_id == run_id, EmbeddingRow.clip_model == clip_model)
            )
            return {row.candidate_id: row.vector for row in rows}

    def generated_elsewhere(self, candidate_ids: Sequence[str], run_id: str) -> dict[str, CandidateRow]:
        """Candidates among `candidate_ids` that another run of this ledger already generated, by id."""
        found: dict[str, CandidateRow] = {}
        with self.transaction() as session:
            for start in range(0, len(candidate_ids), 500):  # stay under SQLite's bound-parameter limit
                query = (
                    select(CandidateRow)
                    .where(
                        CandidateRow.candidate_id.in_(candidate_ids[start : start + 500]),
                        CandidateRow.run_id != run_id,
                        CandidateRow.image_sha256.is_not(None),
                    )
                    .order_by(CandidateRow.created_at)
                )
                for row in session.scalars(query):
                    found.setdefault(row.candidate_id, row)
        return found

    def record_generated(self, run_id: str, images: Sequence[GeneratedImage]) -> None:
        """Mark candidates generated with their files and digests, in one transaction."""
        now = self.clock.now()
        with self.transaction() as session:
            for image in images:
                row = self._candidate(session, run_id, image.candidate_id)
                self._move(session, row, CandidateState.GENERATED, now, {"image_sha256": image.image_sha256})
                row.image_path = image.image_path
                row.image_sha256 = image.image_sha256
                row.pixel_sha256 = image.pixel_sha256
                row.generation = image.generation
                row.error = None

    def record_failed(self, run_id: str, candidate_ids: Sequence[str], reason: str) -> None:
        """Mark candidates failed with the reason."""
        now = self.clock.now()
        with self.transaction() as session:
            for candidate_id in candidate_ids:
                row = self._candidate(session, run_id, candidate_id)
                self._move(session, row, CandidateState.FAILED, now, {"reason": reason})
                row.error = reason

    def record_scores(self, run_id: str, scores: Sequence[CandidateScore]) -> None:
        """Store CLIP scores and embeddings and mark candidates scored, in one transaction."""
        now = self.clock.now()
        with self.transaction() as session:
            for score in scores:
                row = self._candidate(session, run_id, score.candidate_id)
                self._move(
                    session,
                    row,
                    CandidateState.SCORED,
                    now,
                    {"clip_score": score.clip_score, "clip_model": score.clip_model},
                )
                row.clip_model = score.clip_model
                row.clip_score = score.clip_score
                row.clip_cosine = score.clip_cosine
                session.merge(
                    EmbeddingRow(
                        run_id=run_id,
                        candidate_id=score.candidate_id,
                        clip_model=score.clip_model,
                        dim=score.dim,
                        vector=score.embedding,
                    )
                )

    def record_screening(self, run_id: str, verdicts: dict[str, dict[str, Any]]) -> None:
        """Store each candidate's safety verdict (per-filter scores and reasons) and mark it passed or flagged."""
        now = self.clock.now()
        with self.transaction() as session:
            for candidate_id, verdict in verdicts.items():
                row = self._candidate(session, run_id, candidate_id)
                target = CandidateState.SCREENED_FLAGGED if verdict["flagged"] else CandidateState.SCREENED_PASSED
                self._move(session, row, target, now, {"reasons": verdict.get("reasons", [])})
                row.safety = verdict

    def record_job_screening(self, run_id: str, job_key: str, verdict: dict[str, Any] | None) -> None:
        """Store a job's prompt-screening verdict, appending it to the job's revisions when it changed."""
        now = self.clock.now()
        with self.transaction() as session:
            job = self._job(session, run_id, job_key)
            self._revise(session, self._run(session, run_id), job_key, "screening", job.screening, verdict, now)
            job.screening = verdict

    def record_selection(self, run_id: str, ranks: dict[str, int], selected: set[str], reason: dict[str, str]) -> None:
        """Store each candidate's rank within its job and whether it was selected, in one transaction."""
        now = self.clock.now()
        with self.transaction() as session:
            for candidate_id, rank in ranks.items():
                row = self._candidate(session, run_id, candidate_id)
                row.rank = rank
                if row.state == CandidateState.SCREENED_FLAGGED:
                    continue  # ranked for the reviewer, never selected
                target = CandidateState.SELECTED if candidate_id in selected else CandidateState.NOT_SELECTED
                if row.state != target:
                    self._move(session, row, target, now, {"rank": rank, "why": reason.get(candidate_id, "")})

    def decide(
        self,
        run_id: str,
        candidate_id: str,
        decision: str,
        reviewer: str,
        comment: str = "",
        override_reason: str | None = None,
        allow_override: bool = False,
    ) -> CandidateRow:
        """Record a review decision ('approve' or 'reject') with who, when and why; ReviewError when not allowed."""
        if decision not in ("approve", "reject"):
            raise ReviewError(f"decision must be 'approve' or 'reject', got {decision!r}.")
        if not reviewer.strip():
            raise ReviewError("a review decision needs the reviewer's name.")
        now = self.clock.now()
        with self.transaction() as session:
            row = self._candidate(session, run_id, candidate_id)
            current = CandidateState(row.state)
            target = CandidateState.APPROVED if decision == "approve" else CandidateState.REJECTED
            override = None
            # Judged on the safety verdict, not the state: rejecting first must not clear a flag.
            if target == CandidateState.APPROVED and (row.safety or {}).get("flagged"):
                if not allow_override:
                    raise ReviewError(
                        f"candidate {candidate_id} was flagged by safety screening and the policy does not allow "
                        "overrides (safety.human_override is false)."
                    )
                if not (override_reason or "").strip():
                    raise ReviewError(f"candidate {candidate_id} was flagged; approving it needs an override reason.")
                override = {"reason": override_reason, "flags": list((row.safety or {}).get("reasons", []))}
            if current == target:
                return row
            if not can_transition(current, target):
                raise ReviewError(f"candidate {candidate_id} is {current.value}; it cannot be {target.value} now.")
            review = {
                "decision": target.value,
                "by": reviewer,
                "at": now.isoformat(),
                "comment": comment,
                "mode": "manual",
                "override": override,
            }
            self._move(session, row, target, now, review)
            row.review = review
            return row

    def undo_decision(self, run_id: str, candidate_id: str, reviewer: str) -> CandidateRow:
        """Return a candidate to the state its last review decision moved it from, as a new history entry."""
        if not reviewer.strip():
            raise ReviewError("undoing a review decision needs the reviewer's name.")
        now = self.clock.now()
        with self.transaction() as session:
            row = self._candidate(session, run_id, candidate_id)
            entries = list(
                session.scalars(
                    select(HistoryRow)
                    .where(HistoryRow.run_id == run_id, HistoryRow.candidate_id == candidate_id)
                    .order_by(HistoryRow.id)
                )
            )
            decided = (CandidateState.APPROVED, CandidateState.REJECTED)
            # Walk back over earlier undos to the latest decision still in force; anything else ends the walk.
            undone: set[int] = set()
            last: HistoryRow | None = None
            for index in range(len(entries) - 1, -1, -1):
                entry = entries[index]
                if entry.detail.get("decision") == "undone":
                    undone.add(int(entry.detail.get("undoes", 0)))
                elif entry.to_state in decided and entry.id not in undone:
                    last = entry
                    break
                elif entry.id not in undone:
                    break
            if last is None or row.state != last.to_state or not last.from_state:
                raise ReviewError(f"candidate {candidate_id} is {row.state}; it has no decision to undo.")
            target = CandidateState(last.from_state)
            if not can_transition(CandidateState(row.state), target):
                raise ReviewError(f"candidate {candidate_id} cannot go back from {row.state} to {target.value}.")
            # The review in force before the undone one: the decision still standing that led into `target`.
            earlier = next(
                (
                    e
                    for e in reversed(entries[: entries.index(last)])
                    if e.to_state == target and e.id not in undone and e.detail.get("decision") != "undone"
                ),
                None,
            )
            previous = dict(earlier.detail) if earlier is not None and target in decided else None
            undo = {"decision": "undone", "undoes": last.id, "by": reviewer, "at": now.isoformat(), "mode": "manual"}
            self._move(session, row, target, now, undo)
            row.review = previous
            return row

    def follow_review(self, run_id: str) -> str:
        """Set a reviewable run's status from its decisions: pending_review while a selected candidate waits."""
        now = self.clock.now()
        with self.transaction() as session:
            run = self._run(session, run_id)
            if run.status not in (RunStatus.PENDING_REVIEW, RunStatus.COMPLETED):
                return run.status  # running, failed or interrupted: the batch flow owns the status
            waiting = session.scalar(
                select(func.count()).where(CandidateRow.run_id == run_id, CandidateRow.state == CandidateState.SELECTED)
            )
            status = RunStatus.PENDING_REVIEW if waiting else RunStatus.COMPLETED
            if run.status != status:
                detail = {"why": "review decisions", "waiting": waiting}
                session.add(HistoryRow(run_id=run_id, from_state=run.status, to_state=status, at=now, detail=detail))
                run.status = status
                run.updated_at = now
            return run.status

    def auto_approve(self, run_id: str, rule: str) -> int:
        """Approve every selected candidate of a run on the policy's behalf; returns how many."""
        now = self.clock.now()
        with self.transaction() as session:
            rows = list(
                session.scalars(
                    select(CandidateRow).where(
                        CandidateRow.run_id == run_id, CandidateRow.state == CandidateState.SELECTED
                    )
                )
            )
            for row in rows:
                review = {
                    "decision": "approved",
                    "by": "policy",
                    "at": now.isoformat(),
                    "comment": rule,
                    "mode": "auto",
                    "override": None,
                }
                self._move(session, row, CandidateState.APPROVED, now, review)
                row.review = review
            return len(rows)

    # --- assets ---------------------------------------------------------------------------------------------------

    def assign_asset_keys(self, run_id: str, candidate_ids: Sequence[str], max_key: int) -> dict[str, int]:
        """Give each candidate a short serial key for its watermark (idempotent); LedgerError past `max_key`."""
        now = self.clock.now()
        with self.transaction() as session:
            existing = {
                row.candidate_id: row.asset_key
                for row in session.scalars(
                    select(AssetRow).where(AssetRow.run_id == run_id, AssetRow.candidate_id.in_(list(candidate_ids)))
                )
            }
            for candidate_id in candidate_ids:
                if candidate_id not in existing:
                    self._candidate(session, run_id, candidate_id)
                    row = AssetRow(run_id=run_id, candidate_id=candidate_id, created_at=now, provenance={})
                    session.add(row)
                    session.flush()
                    existing[candidate_id] = row.asset_key
            too_big = [key for key in existing.values() if key > max_key]
            if too_big:
                raise LedgerError(
                    f"asset key {max(too_big)} exceeds what the watermark method can carry ({max_key}); "
                    "choose a method with a larger payload (dwtDctSvd carries 32-bit keys)."
                )
            return existing

    def asset_by_key(self, asset_key: int) -> tuple[AssetRow, CandidateRow] | None:
        """The asset a watermark key resolves to, with its candidate record; None when no such key was issued."""
        with self.transaction() as session:
            asset = session.get(AssetRow, asset_key)
            if asset is None:
                return None
            return asset, self._candidate(session, asset.run_id, asset.candidate_id)

    def assets(self, run_id: str) -> list[AssetRow]:
        """A run's asset records, by key."""
        with self.transaction() as session:
            return list(session.scalars(select(AssetRow).where(AssetRow.run_id == run_id).order_by(AssetRow.asset_key)))

    def record_finalized(self, run_id: str, outcomes: Sequence[FinalizedAsset]) -> None:
        """Record finalization results: finalized assets with their signed file's facts, failures with why."""
        now = self.clock.now()
        with self.transaction() as session:
            for outcome in outcomes:
                row = self._candidate(session, run_id, outcome.candidate_id)
                asset = self._asset(session, run_id, outcome.candidate_id)
                if row.state not in (CandidateState.APPROVED, CandidateState.FINALIZE_FAILED):
                    # A reviewer changed their mind while the asset was being signed: drop the signed file.
                    if outcome.final_path:
                        Path(outcome.final_path).unlink(missing_ok=True)
                    session.add(
                        HistoryRow(
                            run_id=run_id,
                            candidate_id=row.candidate_id,
                            from_state=row.state,
                            to_state=row.state,
                            at=now,
                            detail={"finalize_discarded": f"candidate became {row.state} meanwhile"},
                        )
                    )
                    continue
                if not outcome.ok:
                    self._move(session, row, CandidateState.FINALIZE_FAILED, now, {"reason": outcome.reason})
                    row.error = outcome.reason
                    continue
                self._move(
                    session,
                    row,
                    CandidateState.FINALIZED,
                    now,
                    {
                        "sha256": outcome.final_sha256,
                        "manifest": outcome.manifest_label,
                        "validation": outcome.validation_state,
                        "trust": outcome.trust,
                        "watermark": outcome.payload_hex,
                    },
                )
                row.error = None
                for name in (
                    "watermark_method",
                    "payload_hex",
                    "final_path",
                    "final_sha256",
                    "mime",
                    "manifest_label",
                    "validation_state",
                    "signer",
                    "provenance",
                    "final_width",
                    "final_height",
                    "fingerprint",
                ):
                    setattr(asset, name, getattr(outcome, name))
                asset.finalized_at = now

    def record_published(self, run_id: str, candidate_id: str, receipt: dict[str, Any]) -> None:
        """Mark an asset published with where the store confirmed it (bucket, key, version, ETag, checksum, time)."""
        now = self.clock.now()
        with self.transaction() as session:
            row = self._candidate(session, run_id, candidate_id)
            asset = self._asset(session, run_id, candidate_id)
            self._move(session, row, CandidateState.PUBLISHED, now, receipt)
            asset.published = receipt
            asset.published_at = now

    # --- internals --------------------------------------------------------------------------------------------

    @staticmethod
    def _run(session: Session, run_id: str) -> RunRow:
        run = session.get(RunRow, run_id)
        if run is None:
            raise LedgerError(f"no run {run_id!r} in the ledger; `assetmint runs` lists the runs.")
        return run

    @staticmethod
    def _job(session: Session, run_id: str, job_key: str) -> JobRow:
        job = session.get(JobRow, (run_id, job_key))
        if job is None:
            raise LedgerError(f"run {run_id} has no job {job_key}.")
        return job

    @staticmethod
    def _revise(
        session: Session, run: RunRow, job_key: str | None, name: str, old: Any, new: Any, now: datetime
    ) -> None:
        """Append a revision when `new` differs from `old` (compared as canonical JSON; None: nothing recorded)."""
        sha256 = value_sha256(new)
        if sha256 == value_sha256(old):
            return
        session.add(
            RevisionRow(
                run_id=run.run_id,
                job_key=job_key,
                name=name,
                old=old,
                new=new,
                sha256=sha256,
                attempt=run.attempts,
                at=now,
            )
        )

    @staticmethod
    def _revisions(session: Session, run_id: str, job_key: str | None, name: str | None) -> list[RevisionRow]:
        query = select(RevisionRow).where(RevisionRow.run_id == run_id)
        query = query.where(RevisionRow.job_key.is_(None) if job_key is None else RevisionRow.job_key == job_key)
        if name is not None:
            query = query.where(RevisionRow.name == name)
        return list(session.scalars(query.order_by(RevisionRow.id)))

    @staticmethod
    def _asset(session: Session, run_id: str, candidate_id: str) -> AssetRow:
        asset = session.scalars(
            select(AssetRow).where(AssetRow.run_id == run_id, AssetRow.candidate_id == candidate_id)
        ).one_or_none()
        if asset is None:
            raise LedgerError(f"run {run_id} has no asset record for candidate {candidate_id}.")
        return asset

    @staticmethod
    def _candidate(session: Session, run_id: str, candidate_id: str) -> CandidateRow:
        row = session.get(CandidateRow, (run_id, candidate_id))
        if row is None:
            raise LedgerError(f"run {run_id} has no candidate {candidate_id}.")
        return row

    @staticmethod
    def _move(
        session: Session, row: CandidateRow, target: CandidateState, now: datetime, detail: dict[str, Any]
    ) -> None:
        current = CandidateState(row.state)
        if not can_transition(current, target):
            raise LedgerError(f"candidate {row.candidate_id} cannot go from {current.value} to {target.value}.")
        session.add(
            HistoryRow(
                run_id=row.run_id,
                candidate_id=row.candidate_id,
                from_state=current,
                to_state=target,
                at=now,
                detail=detail,
            )
        )
        row.state = target
        row.updated_at = now

    # --- audits -----------------------------------------------------------------------------------------------

    def record_audits(self, rows: Sequence[AuditRow]) -> None:
        """Append audit results (one row per audited object), in one transaction; audits are never updated."""
        with self.transaction() as session:
            session.add_all(list(rows))

    def audits(
        self,
        *,
        target: str | None = None,
        object_name: str | None = None,
        run_id: str | None = None,
        candidate_id: str | None = None,
        verdicts: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[AuditRow]:
        """Recorded audit results, newest first, optionally filtered by target, object, asset or verdict."""
        with self.transaction() as session:
            query = select(AuditRow)
            if target is not None:
                query = query.where(AuditRow.target == target)
            if object_name is not None:
                query = query.where(AuditRow.object == object_name)
            if run_id is not None:
                query = query.where(AuditRow.run_id == run_id)
            if candidate_id is not None:
                query = query.where(AuditRow.candidate_id == candidate_id)
            if verdicts is not None:
                query = query.where(AuditRow.verdict.in_(list(verdicts)))
            query = query.order_by(AuditRow.audited_at.desc(), AuditRow.id.desc())
            if limit is not None:
                query = query.limit(limit)
            return list(session.scalars(query))


class AuditRow(Base):
    """One audit of one object (a file or an S3 key): when, the verdict, and the evidence behind it."""

    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    target: Mapped[str] = mapped_column(Text)
    object: Mapped[str] = mapped_column(Text, index=True)
    verdict: Mapped[str] = mapped_column(String(16), index=True)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_id: Mapped[str | None] = mapped_column(String(96), nullable=True, index=True)
    candidate_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
