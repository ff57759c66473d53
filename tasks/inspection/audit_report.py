"""The audit's HTML report: one self-contained file (inline CSS, SVG chart, base64 thumbnails), all text escaped."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.inspection.audit import VERDICTS
from tasks.provenance.trust import DEVELOPMENT_BANNER

if TYPE_CHECKING:
    from tasks.inspection.audit import AuditResult, AuditSummary

COLOURS = {
    "verified": "#2e7d32",
    "recovered": "#0277bd",
    "tampered": "#c62828",
    "mismatch": "#ad1457",
    "mark_mismatch": "#6a1b9a",
    "untrusted": "#ef6c00",
    "not_ours": "#757575",
    "unreadable": "#4e342e",
}

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:6px;text-align:left;
vertical-align:top}th{background:#f5f5f5}.v{color:#fff;border-radius:3px;padding:2px 6px;font-weight:600}
.obj{font-family:monospace;word-break:break-all;max-width:28em}.fail{background:#fff3f3}
.ev{font-family:monospace;font-size:12px;white-space:pre-wrap;max-width:40em;word-break:break-all}
img{border:1px solid #ccc}.muted{color:#777}
.dev{background:#fff3e0;border:1px solid #ef6c00;padding:8px 12px;font-weight:600}
"""


def bar_chart(counts: dict[str, int]) -> str:
    """An inline SVG bar chart of objects per verdict."""
    width, bar_height, gap, label_width = 560, 22, 6, 110
    top = max(counts.values(), default=0) or 1
    rows = []
    for index, verdict in enumerate(VERDICTS):
        count = counts.get(verdict, 0)
        y = index * (bar_height + gap)
        length = int((width - label_width - 60) * count / top)
        rows.append(
            f'<text x="0" y="{y + 16}" font-size="13">{escape(verdict)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length}" height="{bar_height}" fill="{COLOURS[verdict]}"/>'
            f'<text x="{label_width + length + 6}" y="{y + 16}" font-size="13">{count}</text>'
        )
    height = len(VERDICTS) * (bar_height + gap)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="objects per verdict">{"".join(rows)}</svg>'
    )


def _evidence_lines(result: AuditResult) -> str:
    evidence = result.evidence
    credential = evidence.get("credential") or {}
    watermark = evidence.get("watermark") or {}
    lines = [f"sha256 {evidence.get('sha256', '-')}"]
    if credential:
        lines.append(
            f"credential {credential.get('trust') or credential.get('state')} "
            f"{' '.join(credential.get('status_codes') or [])} "
            f"manifest {credential.get('manifest_label')} signer {credential.get('signer')}"
        )
    if watermark:
        lines.append(
            f"watermark {watermark.get('method')} key {watermark.get('key')} payload {watermark.get('payload')} "
            f"({watermark.get('attempt') or watermark.get('error', '')})"
        )
    recovered = evidence.get("recovered")
    if recovered:
        lines.append(f"original manifest {recovered.get('manifest_label')}")
    likeness = evidence.get("likeness")
    if likeness:
        score = likeness.get("score")
        lines.append(f"likeness {score} (threshold {likeness.get('threshold')})" if score is not None else "likeness -")
    if evidence.get("s3_metadata"):
        lines.append(f"s3 metadata {json.dumps(evidence['s3_metadata'], sort_keys=True)}")
    return escape("\n".join(lines))


def _row(result: AuditResult) -> str:
    thumb = (
        f'<img src="{escape(result.thumbnail, quote=True)}" alt="" width="96">'
        if result.thumbnail and result.thumbnail.startswith("data:image/jpeg;base64,")
        else '<span class="muted">-</span>'
    )
    asset = escape(f"{result.candidate_id} (run {result.run_id})") if result.candidate_id else "-"
    reasons = "<br>".join(escape(reason) for reason in result.reasons)
    colour = COLOURS.get(result.verdict, "#000")
    return (
        f'<tr class="{"fail" if result.failed else ""}"><td>{thumb}</td><td class="obj">{escape(result.object)}</td>'
        f'<td><span class="v" style="background:{colour}">{escape(result.verdict)}</span>'
        f"{' <b>FAILED</b>' if result.failed else ''}</td><td>{asset}</td><td>{reasons}</td>"
        f'<td class="ev">{_evidence_lines(result)}</td></tr>'
    )


def render_html(summary: AuditSummary) -> str:
    """The whole report as one HTML document."""
    counts = summary.counts
    count_cells = "".join(f"<tr><td>{escape(v)}</td><td>{counts[v]}</td></tr>" for v in VERDICTS)
    targets = ", ".join(summary.targets)
    finished = summary.finished_at.isoformat() if summary.finished_at else "-"
    failures = len(summary.failures)
    development = len(summary.development_signed)
    banner = f'<p class="dev">{development} objects: {escape(DEVELOPMENT_BANNER)}</p>' if development else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>AssetMint audit of {escape(targets)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>AssetMint audit</h1><p>Targets: <b>{escape(targets)}</b><br>"
        f"Started {escape(summary.started_at.isoformat())}"
        f", finished {escape(finished)}; {len(summary.results)} objects; "
        f"<b>{failures}</b> published or finalized objects failed.</p>{banner}"
        f"<h2>Verdicts</h2>{bar_chart(counts)}<table style='width:auto'><tr><th>verdict</th><th>objects</th></tr>"
        f"{count_cells}</table><h2>Objects</h2><table><tr><th></th><th>object</th><th>verdict</th><th>asset</th>"
        f"<th>why</th><th>evidence</th></tr>{''.join(_row(r) for r in summary.results)}</table></body></html>\n"
    )


def write_html(summary: AuditSummary, path: Path) -> Path:
    """Write the report to `path` (creating its folder) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(summary), encoding="utf-8")
    return path
