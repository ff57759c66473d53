"""The review web app: runs, CLIP-ranked contact sheets, candidate details, decisions and finalize, behind a token."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from policies.model import Policy
from tasks.core.errors import AssetMintError, ReviewError
from tasks.core.states import CandidateState
from tasks.provenance import trust
from tasks.storage.ledger import CandidateRow, JobRow, Ledger, RunRow
from tasks.storage.workdir import candidate_image_path, candidate_store, work_dir_of_run
from tasks.web.bounds import BodyLimit, check_text, quoted, validation_message
from tasks.web.review import sheet
from tasks.web.review.delivery import Deliveries, DeliverySubmitter
from tasks.web.review.security import CSRF_FIELD, FORM_TYPE, MAX_FORM_BYTES, SECURITY_HEADERS, Gate, guard

HERE = Path(__file__).resolve().parent
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
ID_RULE = "1 to 96 letters, digits, '.', '_' or '-', starting with a letter or digit"
DECISIONS = ("approve", "reject")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
THUMB_SIZE = 320
MAX_TEXT = 2000  # a comment or an override reason; the page's inputs say maxlength="2000" too
# The fields each state-changing route takes; any other field is refused, so a misspelt one is never ignored.
DECIDE_FIELDS = frozenset({"decision", "comment", "override_reason", "show", CSRF_FIELD})
UNDO_FIELDS = frozenset({"show", CSRF_FIELD})
BULK_FIELDS = frozenset({"comment", CSRF_FIELD})
FINALIZE_FIELDS = frozenset({CSRF_FIELD})
BULK_COMMENT = "bulk approval: top-k of every prompt by CLIP score"
EXPORT_COLUMNS = (
    "candidate",
    "prompt_id",
    "variant",
    "seed",
    "rank",
    "score",
    "state",
    "decision",
    "reviewer",
    "time",
    "comment",
    "override_reason",
)
IMAGE_CACHE = {"Cache-Control": "private, max-age=600"}


class _Thumbnails:
    """Small JPEG previews of candidate images, made on demand and kept in a bounded in-memory cache."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> bytes:
        """The thumbnail of `path` (rebuilt when the file changes)."""
        from PIL import Image

        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with Image.open(path) as image:
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self._limit:
                self._cache.popitem(last=False)
        return data


def _templates() -> Jinja2Templates:
    """Jinja templates with autoescaping on for every file."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["score"] = lambda value: "-" if value is None else f"{value:.4f}"
    env.filters["pretty"] = lambda value: json.dumps(value, sort_keys=True, default=str)
    env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"
    env.globals["trust_label"] = trust.trust_label
    env.globals["development_banner"] = trust.DEVELOPMENT_BANNER
    return Jinja2Templates(env=env)


def _wants_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return (
        request.url.path.startswith("/api/")
        or "application/json" in request.headers.get("accept", "")
        or content_type.startswith("application/json")
    )


async def _fields(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The string fields of a POST body (a JSON object or a urlencoded form), each one of `allowed`; 4xx otherwise."""
    body = await request.body()  # BodyLimit has refused one over MAX_FORM_BYTES (413)
    if not body:
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "request body is not UTF-8 text.") from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == FORM_TYPE:
        pairs: list[tuple[str, Any]] = parse_qsl(text, keep_blank_values=True)
    elif content_type == "application/json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise HTTPException(400, "request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "request body must be a JSON object.")
        pairs = [(k, v) for k, v in data.items() if v is not None]
    else:
        raise HTTPException(415, "send application/json or a urlencoded form.")
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise HTTPException(400, f"unknown field {quoted(name)}; this action takes {', '.join(sorted(allowed))}.")
        if not isinstance(value, str):
            raise HTTPException(400, f"{name} must be a string, got {type(value).__name__}.")
        if name in fields:
            raise HTTPException(400, f"{name} is given more than once.")
        fields[name] = value
    return fields


def _text(fields: dict[str, str], name: str) -> str:
    return check_text(name, fields.get(name, ""), MAX_TEXT).strip()


def _filter(show: str) -> str:
    """A contact sheet filter name; 400 naming the filters otherwise."""
    if show not in sheet.FILTERS:
        raise HTTPException(400, f"unknown filter {quoted(show)}; use one of {', '.join(sheet.FILTERS)}.")
    return show


def _check_id(kind: str, value: str) -> None:
    if not ID_PATTERN.fullmatch(value):
        raise HTTPException(400, f"{quoted(value)} is not a {kind} id: an id is {ID_RULE}.")


def _image_path(run: RunRow, row: CandidateRow) -> Path:
    """The candidate's own image: its file in the work dir's candidate store, or in the run's folder; 404 otherwise."""
    if not row.image_path:
        raise HTTPException(404, "this candidate has no image.")
    run_dir = Path(run.run_dir)
    try:
        path = Path(row.image_path).resolve(strict=True)
        # The store is shared by runs, so there a record may only name the file its own id addresses.
        own_in_store = (
            path == candidate_image_path(candidate_store(work_dir_of_run(run_dir)), row.candidate_id).resolve()
        )
        in_run_dir = path.is_relative_to(run_dir.resolve())  # where releases before the store kept images
    except (OSError, RuntimeError):
        raise HTTPException(404, "image not found.") from None
    if not (own_in_store or in_run_dir) or not path.is_file() or path.suffix.lower() not in IMAGE_TYPES:
        raise HTTPException(404, "image not found.")
    return path


def _candidate_json(run_id: str, row: CandidateRow) -> dict[str, Any]:
    base = f"/runs/{run_id}/candidates/{row.candidate_id}"
    return {
        "candidate_id": row.candidate_id,
        "job_key": row.job_key,
        "seed": row.seed,
        "rank": row.rank,
        "clip_score": row.clip_score,
        "state": row.state,
        "flagged": sheet.is_flagged(row),
        "reasons": list((row.safety or {}).get("reasons", [])),
        "review": row.review,
        "detail_url": base,
        "image_url": f"{base}/image",
    }


def _export_rows(jobs: list[JobRow], rows: list[CandidateRow]) -> list[dict[str, Any]]:
    """One row per decided candidate of a run, in contact sheet order (EXPORT_COLUMNS)."""
    out: list[dict[str, Any]] = []
    for group in sheet.group_by_job(jobs, rows, "all"):
        for row in group.candidates:
            review = row.review or {}
            if not review.get("decision"):
                continue
            out.append(
                {
                    "candidate": row.candidate_id,
                    "prompt_id": group.job.prompt_id,
                    "variant": group.job.variant,
                    "seed": row.seed,
                    "rank": row.rank,
                    "score": row.clip_score,
                    "state": row.state,
                    "decision": review.get("decision"),
                    "reviewer": review.get("by"),
                    "time": review.get("at"),
                    "comment": review.get("comment") or "",
                    "override_reason": (review.get("override") or {}).get("reason") or "",
                }
            )
    return out


def _csv_cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula is prefixed with an apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def publish_target(policy: Policy) -> str:
    """Where finalize-and-publish puts assets, as a reviewer should read it: s3://bucket/prefix or a folder."""
    location = policy.publish.location
    if location.kind == "s3":
        return f"s3://{location.bucket}/{location.prefix}".rstrip("/")
    return str(location.folder_path(policy.resolved_work_dir()))


def create_app(
    ledger_url: str,
    policy: Policy,
    token: str,
    reviewer: str,
    run_filter: str | None = None,
    submit_delivery: DeliverySubmitter | None = None,
) -> FastAPI:
    """The review app on one ledger, deciding as `reviewer`; `submit_delivery` starts finalize-and-publish runs."""
    if not reviewer.strip():
        raise ReviewError("a review session needs the reviewer's name (--reviewer).")
    ledger = Ledger.open(ledger_url)
    gate = Gate(token)
    deliveries = Deliveries(ledger, ledger_url, policy, submit_delivery)
    thumbnails = _Thumbnails()
    templates = _templates()
    app = FastAPI(title="AssetMint review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ledger = ledger
    app.state.deliveries = deliveries
    app.state.gate = gate
    app.middleware("http")(guard(gate))
    # Outermost, so the guard's CSRF read is capped too; its refusals carry the guard's headers.
    app.add_middleware(BodyLimit, max_bytes=MAX_FORM_BYTES, error_key="error", headers=SECURITY_HEADERS)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def get_run(run_id: str) -> RunRow:
        _check_id("run", run_id)
        if run_filter is not None and run_id != run_filter:
            raise HTTPException(404, "no such run.")
        try:
            return ledger.run(run_id)
        except AssetMintError:
            raise HTTPException(404, "no such run.") from None

    def get_candidate(run_id: str, candidate_id: str) -> CandidateRow:
        _check_id("candidate", candidate_id)
        with ledger.transaction() as session:
            row = session.get(CandidateRow, (run_id, candidate_id))
        if row is None:
            raise HTTPException(404, "no such candidate in this run.")
        return row

    def summary(run_id: str) -> dict[str, Any]:
        """What the run page keeps live: run status, counts, filter counts, approvals per job, card states, delivery."""
        rows = ledger.candidates(run_id)
        return {
            "run_id": run_id,
            "status": ledger.run(run_id).status,
            "counts": ledger.state_counts(run_id),
            "filters": {name: sum(sheet.matches(r, name) for r in rows) for name in sheet.FILTERS},
            "approved_per_job": sheet.approved_per_job(rows),
            "states": {r.candidate_id: r.state for r in rows},
            "publish": deliveries.status(run_id),
        }

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        session = getattr(request.state, "session", None)
        common = {
            "csrf_token": session.csrf_token if session else "",
            "reviewer": reviewer,
            "override_allowed": policy.safety.human_override,
            "development_signed": "run" in context
            and trust.any_development(a.signer for a in ledger.assets(context["run"].run_id)),
        }
        return templates.TemplateResponse(request, name, {**common, **context}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if _wants_json(request):
            return JSONResponse({"error": message}, status_code=exc.status_code)
        return page(request, "error.html", {"status": exc.status_code, "message": message}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return await http_error(request, StarletteHTTPException(400, validation_message(exc)))

    @app.exception_handler(AssetMintError)
    async def review_error(request: Request, exc: AssetMintError) -> Response:
        return await http_error(request, StarletteHTTPException(409, str(exc)))

    @app.get("/")
    def runs_page(request: Request) -> Response:
        runs = [r for r in ledger.runs() if run_filter is None or r.run_id == run_filter]
        if run_filter is not None and len(runs) == 1:
            return RedirectResponse(f"/runs/{run_filter}", status_code=303)
        views = [{"run": r, "counts": ledger.state_counts(r.run_id)} for r in runs]
        return page(request, "runs.html", {"runs": views})

    @app.get("/api/runs")
    def runs_json() -> dict[str, Any]:
        runs = [r for r in ledger.runs() if run_filter is None or r.run_id == run_filter]
        return {
            "runs": [
                {
                    "run_id": r.run_id,
                    "campaign_id": r.campaign_id,
                    "campaign_name": r.campaign_name,
                    "status": r.status,
                    "created_at": r.created_at.isoformat(),
                    "counts": ledger.state_counts(r.run_id),
                }
                for r in runs
            ]
        }

    @app.get("/runs/{run_id}")
    def run_page(request: Request, run_id: str, show: str = "all") -> Response:
        _filter(show)
        run = get_run(run_id)
        rows = ledger.candidates(run_id)
        scores = [r.clip_score for r in rows if r.clip_score is not None]
        context = {
            "run": run,
            "approved_per_job": sheet.approved_per_job(rows),
            "publish_target": publish_target(policy),
            "undecided": sheet.UNDECIDED,
            "decided": sheet.DECIDED,
            "show": show,
            "filters": {name: sum(sheet.matches(r, name) for r in rows) for name in sheet.FILTERS},
            "groups": sheet.group_by_job(ledger.jobs(run_id), rows, show),
            "counts": ledger.state_counts(run_id),
            "histogram": sheet.histogram(scores),
            "publish": deliveries.status(run_id),
            "is_flagged": sheet.is_flagged,
            "safety_results": sheet.safety_results,
        }
        return page(request, "run.html", context)

    @app.get("/api/runs/{run_id}/candidates")
    def candidates_json(run_id: str, show: str = "all") -> dict[str, Any]:
        _filter(show)
        get_run(run_id)
        groups = sheet.group_by_job(ledger.jobs(run_id), ledger.candidates(run_id), show)
        return {
            "run_id": run_id,
            "groups": [
                {
                    "job_key": g.job.job_key,
                    "prompt_id": g.job.prompt_id,
                    "variant": g.job.variant,
                    "prompt": g.job.prompt,
                    "keep_top_k": g.job.keep_top_k,
                    "candidates": [_candidate_json(run_id, r) for r in g.candidates],
                }
                for g in groups
            ],
        }

    @app.get("/runs/{run_id}/candidates/{candidate_id}")
    def candidate_page(request: Request, run_id: str, candidate_id: str) -> Response:
        run = get_run(run_id)
        row = get_candidate(run_id, candidate_id)
        order = [
            r.candidate_id
            for g in sheet.group_by_job(ledger.jobs(run_id), ledger.candidates(run_id), "all")
            for r in g.candidates
        ]
        here = order.index(candidate_id) if candidate_id in order else -1
        context = {
            "run": run,
            "row": row,
            "previous_id": order[here - 1] if here > 0 else None,
            "next_id": order[here + 1] if 0 <= here < len(order) - 1 else None,
            "undecided": sheet.UNDECIDED,
            "decided": sheet.DECIDED,
            "job": next((j for j in ledger.jobs(run_id) if j.job_key == row.job_key), None),
            "asset": next((a for a in ledger.assets(run_id) if a.candidate_id == candidate_id), None),
            "history": ledger.history(run_id, candidate_id),
            "flagged": sheet.is_flagged(row),
            "results": sheet.safety_results(row),
            "show": "all",
        }
        return page(request, "candidate.html", context)

    @app.get("/runs/{run_id}/candidates/{candidate_id}/image")
    def candidate_image(run_id: str, candidate_id: str, thumb: bool = False) -> Response:
        path = _image_path(get_run(run_id), get_candidate(run_id, candidate_id))
        if thumb:
            return Response(thumbnails.get(path), media_type="image/jpeg", headers=IMAGE_CACHE)
        return FileResponse(path, media_type=IMAGE_TYPES[path.suffix.lower()], headers=IMAGE_CACHE)

    async def after_decision(request: Request, run_id: str, row: CandidateRow, fields: dict[str, str]) -> Response:
        """Let the run's status follow the decisions, then answer with the live summary (JSON) or the sheet."""
        await run_in_threadpool(ledger.follow_review, run_id)
        if _wants_json(request):
            live = await run_in_threadpool(summary, run_id)
            return JSONResponse(
                {"candidate_id": row.candidate_id, "state": row.state, "review": row.review, "summary": live}
            )
        show = fields.get("show", "all")  # checked before the decision was recorded
        return RedirectResponse(f"/runs/{run_id}?show={show}#c-{row.candidate_id}", status_code=303)

    @app.post("/runs/{run_id}/candidates/{candidate_id}/decision")
    async def decide(request: Request, run_id: str, candidate_id: str) -> Response:
        get_run(run_id)
        get_candidate(run_id, candidate_id)
        fields = await _fields(request, DECIDE_FIELDS)
        decision = fields.get("decision", "")
        if decision not in DECISIONS:
            raise HTTPException(400, f"decision must be one of {', '.join(DECISIONS)}; got {quoted(decision)}.")
        comment = _text(fields, "comment")
        override_reason = _text(fields, "override_reason") or None
        _filter(fields.get("show", "all"))
        row = await run_in_threadpool(
            ledger.decide,
            run_id,
            candidate_id,
            decision,
            reviewer,
            comment,
            override_reason,
            policy.safety.human_override,
        )
        return await after_decision(request, run_id, row, fields)

    @app.post("/runs/{run_id}/candidates/{candidate_id}/undo")
    async def undo(request: Request, run_id: str, candidate_id: str) -> Response:
        get_run(run_id)
        get_candidate(run_id, candidate_id)
        fields = await _fields(request, UNDO_FIELDS)
        _filter(fields.get("show", "all"))
        row = await run_in_threadpool(ledger.undo_decision, run_id, candidate_id, reviewer)
        return await after_decision(request, run_id, row, fields)

    @app.get("/api/runs/{run_id}/summary")
    def summary_json(run_id: str) -> dict[str, Any]:
        get_run(run_id)
        return summary(run_id)

    @app.get("/runs/{run_id}/decisions.json")
    def decisions_json(run_id: str) -> Response:
        get_run(run_id)
        rows = _export_rows(ledger.jobs(run_id), ledger.candidates(run_id))
        body = json.dumps({"run_id": run_id, "columns": list(EXPORT_COLUMNS), "decisions": rows}, indent=1)
        disposition = f'attachment; filename="{run_id}-decisions.json"'
        return Response(body, media_type="application/json", headers={"Content-Disposition": disposition})

    @app.get("/runs/{run_id}/decisions.csv")
    def decisions_csv(run_id: str) -> Response:
        get_run(run_id)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(EXPORT_COLUMNS)
        for item in _export_rows(ledger.jobs(run_id), ledger.candidates(run_id)):
            writer.writerow([_csv_cell(item[name]) for name in EXPORT_COLUMNS])
        disposition = f'attachment; filename="{run_id}-decisions.csv"'
        headers = {"Content-Disposition": disposition}
        return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)

    @app.post("/runs/{run_id}/approve-top-k")
    async def approve_top_k(request: Request, run_id: str) -> Response:
        get_run(run_id)
        fields = await _fields(request, BULK_FIELDS)
        comment = _text(fields, "comment") or BULK_COMMENT

        def work() -> tuple[list[str], list[str]]:
            picks = sheet.top_k_picks(
                ledger.jobs(run_id), ledger.candidates(run_id), policy.scoring.top_k, policy.scoring.min_score
            )
            approved: list[str] = []
            errors: list[str] = []
            for row in picks:
                try:
                    ledger.decide(run_id, row.candidate_id, "approve", reviewer, comment)
                    approved.append(row.candidate_id)
                except ReviewError as exc:
                    errors.append(f"{row.candidate_id}: {exc}")
            return approved, errors

        approved, errors = await run_in_threadpool(work)
        await run_in_threadpool(ledger.follow_review, run_id)
        if _wants_json(request):
            return JSONResponse({"approved": approved, "errors": errors})
        return RedirectResponse(f"/runs/{run_id}?show=approved", status_code=303)

    @app.post("/runs/{run_id}/finalize")
    async def finalize(request: Request, run_id: str) -> Response:
        get_run(run_id)
        await _fields(request, FINALIZE_FIELDS)
        waiting = [
            r
            for r in ledger.candidates(run_id, [CandidateState.APPROVED, CandidateState.FINALIZE_FAILED])
            if (r.review or {}).get("decision") == "approved"
        ]
        unpublished = ledger.candidates(run_id, [CandidateState.FINALIZED])
        if not waiting and not unpublished:
            raise HTTPException(409, "no approved candidates wait for finalizing; approve some first.")
        await run_in_threadpool(deliveries.start, run_id, reviewer)
        if _wants_json(request):
            return JSONResponse(await run_in_threadpool(deliveries.status, run_id), status_code=202)
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    @app.get("/api/runs/{run_id}/finalize")
    def finalize_status(run_id: str) -> dict[str, Any]:
        get_run(run_id)
        return deliveries.status(run_id)

    return app
