"""Prompt manifests: the pydantic model, loading with line-aware errors, and expansion into generation jobs."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import string
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from policies.model import MAX_CANDIDATES_PER_RUN
from policies.yamlfile import YamlLimits, json_schema, load_yaml, validate_yaml
from tasks.core.errors import ManifestError, PolicyError
from tasks.core.schedulers import get_scheduler_preset

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
_ASPECT = re.compile(r"^(\d{1,3}):(\d{1,3})$")
MIN_SIDE = 64
MAX_SIDE = 8192
MAX_SEED = 2**63 - 1  # torch, numpy and every diffusers generator take a signed 64-bit seed
MAX_CANDIDATES_PER_JOB = 1024
MAX_PROMPT_CHARS = 4000  # after expansion; CLIP reads 77 tokens, a diffusion text encoder at most a few hundred
MAX_VALUE_CHARS = 1000
MAX_VALUES_PER_VAR = 1000
MAX_PROMPTS = 10_000
MANIFEST_LIMITS = YamlLimits(max_bytes=1 << 20)

Text = Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]
VarValue = Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class OutputFormat(StrEnum):
    """Delivery formats for finalized assets."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


class Campaign(BaseModel):
    """Who the batch is for."""

    model_config = ConfigDict(extra="forbid")
    id: Slug = Field(description="Stable campaign identifier: lowercase letters, digits, '-' or '_' (max 64).")
    name: str = Field(min_length=1, max_length=200, description="Human-readable campaign name.")


def _check_aspect(value: str) -> str:
    match = _ASPECT.match(value)
    if not match or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        raise ValueError(f"aspect ratio must look like '16:9' with non-zero integers, got {value!r}")
    return value


def _check_multiple_of_8(value: int | None, name: str) -> int | None:
    if value is not None and value % 8:
        raise ValueError(f"{name} must be a multiple of 8 (latent diffusion works on 8x8 pixel cells), got {value}")
    return value


class GenerationSettings(BaseModel):
    """Settings shared by `defaults` and each prompt; a prompt's value overrides the default."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(
        None,
        max_length=1024,
        description="Model reference: 'embedded:shapes-sd' (trained demo model, 64 px), 'embedded:tiny-sd' (random, "
        "for tests), a local diffusers pipeline folder, or a model id (optionally 'id@revision').",
    )
    negative_prompt: Text | None = Field(None, description="Text the image should not show.")
    candidates: int | None = Field(
        None, ge=1, le=MAX_CANDIDATES_PER_JOB, description="Images generated per prompt job."
    )
    seeds: list[Seed] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CANDIDATES_PER_JOB,
        description="Explicit seeds (0..2**63-1), one per candidate. Exclusive with base_seed.",
    )
    base_seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="Candidate i uses seed base_seed + i (every seed in 0..2**63-1). Exclusive with seeds.",
    )
    width: int | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE, description="Image width in pixels (multiple of 8).")
    height: int | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE, description="Image height in pixels (multiple of 8).")
    aspect_ratio: str | list[str] | None = Field(
        None,
        description="Aspect ratio like '16:9', or a list of them to expand over; used with long_side instead of "
        "width/height.",
    )
    long_side: int | None = Field(
        None, ge=MIN_SIDE, le=MAX_SIDE, description="Length in pixels of the longer side when aspect_ratio is used."
    )
    steps: int | None = Field(None, ge=1, le=500, description="Denoising steps.")
    guidance: float | None = Field(None, ge=0, le=50, description="Classifier-free guidance scale.")
    scheduler: str | None = Field(None, description="Named scheduler (see tasks/core/data/schedulers.yaml).")
    keep_top_k: int | None = Field(
        None,
        ge=1,
        le=MAX_CANDIDATES_PER_JOB,
        description="Best candidates per prompt job to select; a job with fewer candidates selects them all.",
    )
    output_format: OutputFormat | None = Field(None, description="Delivery format of finalized assets.")

    @field_validator("seeds")
    @classmethod
    def _seeds_non_negative(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None:
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("aspect_ratio")
    @classmethod
    def _aspect(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("aspect_ratio list must not be empty")
            return [_check_aspect(v) for v in value]
        return _check_aspect(value) if value is not None else None

    @field_validator("width", "height", "long_side")
    @classmethod
    def _multiple_of_8(cls, value: int | None, info: Any) -> int | None:
        return _check_multiple_of_8(value, info.field_name)

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str | None) -> str | None:
        if value is not None:
            get_scheduler_preset(value)
        return value

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("model must not be empty")
        return value

    @model_validator(mode="after")
    def _exclusive(self) -> GenerationSettings:
        if self.seeds is not None and self.base_seed is not None:
            raise ValueError("set either seeds or base_seed, not both")
        if (self.width is not None or self.height is not None) and self.aspect_ratio is not None:
            raise ValueError("set either width/height or aspect_ratio + long_side, not both")
        return self


class PromptSpec(GenerationSettings):
    """One prompt template; its variables expand into one job per combination."""

    id: Slug | None = Field(None, description="Short name for this prompt; defaults to its position (p1, p2, ...).")
    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="Prompt text; '{name}' placeholders are filled from vars (use '{{' for a literal brace).",
    )
    vars: dict[str, Annotated[list[VarValue], Field(max_length=MAX_VALUES_PER_VAR)]] = Field(
        default_factory=dict,
        description="Values per placeholder; every combination becomes one job (matrix expansion).",
    )

    @model_validator(mode="after")
    def _template_matches_vars(self) -> PromptSpec:
        try:
            parts = list(string.Formatter().parse(self.prompt))
        except ValueError as exc:
            raise ValueError(f"prompt template {self.prompt!r} is malformed: {exc}") from None
        placeholders = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
        for name, spec, conversion in placeholders:
            if not name.isidentifier():
                raise ValueError(f"placeholder {{{name}}} in {self.prompt!r} is not a simple name")
            if spec or conversion:
                written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(
                    f"placeholder {written} in {self.prompt!r} has a format spec or conversion; only plain "
                    f"{{{name}}} is allowed"
                )
        fields = {name for name, _, _ in placeholders}
        missing = sorted(fields - set(self.vars))
        if missing:
            raise ValueError(f"placeholder {{{missing[0]}}} in {self.prompt!r} has no entry in vars")
        unused = sorted(set(self.vars) - fields)
        if unused:
            raise ValueError(f"vars.{unused[0]} is not used by the prompt template {self.prompt!r}")
        empty = [name for name, values in self.vars.items() if not values]
        if empty:
            raise ValueError(f"vars.{empty[0]} must list at least one value")
        longest = sum(len(literal) for literal, _, _, _ in parts) + sum(
            max(len(value) for value in self.vars[name]) for name, _, _ in placeholders
        )
        if longest > MAX_PROMPT_CHARS:
            raise ValueError(
                f"the prompt template expands to up to {longest:,} characters with its longest vars; the limit is "
                f"{MAX_PROMPT_CHARS:,}"
            )
        return self

    def combinations(self) -> int:
        """How many jobs per size the vars matrix expands to, computed without expanding it."""
        return math.prod(len(values) for values in self.vars.values())


class Manifest(BaseModel):
    """A batch of marketing images to produce."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(1, ge=1, le=1, description="Manifest format version; only 1 exists.")
    campaign: Campaign = Field(description="Campaign the batch belongs to.")
    defaults: GenerationSettings = Field(
        default_factory=GenerationSettings, description="Settings applied to every prompt unless it overrides them."
    )
    prompts: list[PromptSpec] = Field(min_length=1, max_length=MAX_PROMPTS, description="Prompt templates to expand.")

    @model_validator(mode="after")
    def _unique_prompt_ids(self) -> Manifest:
        seen: set[str] = set()
        for index, spec in enumerate(self.prompts):
            prompt_id = spec.id or f"p{index + 1}"
            if prompt_id in seen:
                raise ValueError(f"prompt id {prompt_id!r} is used more than once")
            seen.add(prompt_id)
        return self


BUILTIN_DEFAULTS: dict[str, Any] = {
    "negative_prompt": "",
    "candidates": 4,
    "base_seed": 0,
    "width": 512,
    "height": 512,
    "steps": 20,
    "guidance": 7.5,
    "scheduler": "default",
    "keep_top_k": 2,
    "output_format": OutputFormat.PNG,
}


@dataclass(frozen=True)
class Job:
    """One expanded prompt with fully resolved settings: every candidate of a job differs only by seed."""

    job_key: str
    prompt_id: str
    variant: str
    prompt: str
    variables: dict[str, str]
    negative_prompt: str
    model: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    seeds: tuple[int, ...]
    keep_top_k: int
    output_format: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for hashing and the ledger."""
        data = asdict(self)
        data["seeds"] = list(self.seeds)
        return data


@dataclass(frozen=True)
class Plan:
    """A manifest expanded into jobs; the run id is the campaign id plus a digest of the jobs' pixel-making content."""

    source: Path
    campaign_id: str
    campaign_name: str
    run_id: str
    jobs: tuple[Job, ...]

    @property
    def candidate_count(self) -> int:
        """Total images the plan generates."""
        return sum(len(job.seeds) for job in self.jobs)


def canonical_digest(data: Any) -> str:
    """sha256 of the canonical JSON form of `data`."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _size_from_aspect(aspect: str, long_side: int) -> tuple[int, int]:
    w_ratio, h_ratio = (int(x) for x in aspect.split(":"))
    if w_ratio >= h_ratio:
        return long_side, max(8, round(long_side * h_ratio / w_ratio / 8) * 8)
    return max(8, round(long_side * w_ratio / h_ratio / 8) * 8), long_side


def _resolve_sizes(settings: dict[str, Any], where: str) -> list[tuple[str, int, int]]:
    aspect = settings.get("aspect_ratio")
    if aspect is None:
        width, height = settings.get("width"), settings.get("height")
        if (width is None) != (height is None):
            raise ManifestError(f"{where}: set both width and height (got width={width}, height={height}).")
        return [("", width, height)]
    long_side = settings.get("long_side")
    if long_side is None:
        raise ManifestError(f"{where}: aspect_ratio {aspect!r} needs long_side (pixels of the longer side).")
    aspects = aspect if isinstance(aspect, list) else [aspect]
    sizes = [(a, *_size_from_aspect(a, long_side)) for a in aspects]
    for a, width, height in sizes:
        if min(width, height) < MIN_SIDE:
            raise ManifestError(
                f"{where}: aspect_ratio {a!r} at long_side {long_side} gives {width}x{height}, under the {MIN_SIDE} px "
                "minimum side; use a less extreme ratio or a longer long_side."
            )
    return sizes


def _resolve_seeds(settings: dict[str, Any], where: str) -> tuple[int, ...]:
    seeds, candidates = settings.get("seeds"), settings.get("candidates")
    if seeds is not None:
        layers = settings["_layer"]
        # A count set at the same or a more specific level than the seed list must agree with it.
        if layers.get("candidates", -1) >= layers["seeds"] and candidates != len(seeds):
            raise ManifestError(
                f"{where}: candidates is {candidates} but seeds lists {len(seeds)} values; they must agree."
            )
        return tuple(seeds)
    base = settings.get("base_seed", 0)
    if base + candidates - 1 > MAX_SEED:
        raise ManifestError(
            f"{where}: base_seed {base} with {candidates} candidates needs seeds up to {base + candidates - 1}, past "
            f"the largest seed 2**63-1 ({MAX_SEED}); use a base_seed in 0..{MAX_SEED - candidates + 1}."
        )
    return tuple(base + i for i in range(candidates))


def _merged_settings(defaults: GenerationSettings, spec: PromptSpec) -> dict[str, Any]:
    merged = dict(BUILTIN_DEFAULTS)
    set_by_layer: dict[str, int] = {}
    for level, layer in enumerate((defaults, spec)):
        values = layer.model_dump(exclude_none=True, exclude={"id", "prompt", "vars"})
        if "seeds" in values:
            merged.pop("base_seed", None)
        if "base_seed" in values:
            merged.pop("seeds", None)
        if "width" in values or "height" in values:
            merged.pop("aspect_ratio", None)
        if "aspect_ratio" in values:
            merged.pop("width", None)
            merged.pop("height", None)
        merged.update(values)
        set_by_layer.update({key: level for key in values})
    merged["_layer"] = set_by_layer
    return merged


def _where(source: Path, index: int, spec: PromptSpec) -> str:
    return f"{source}: prompts[{index}] ({spec.id or f'p{index + 1}'})"


@dataclass(frozen=True)
class _Resolved:
    """One prompt spec with its settings merged and its sizes and seeds resolved, before any expansion."""

    index: int
    spec: PromptSpec
    where: str
    settings: dict[str, Any]
    model: str
    sizes: list[tuple[str, int, int]]
    seeds: tuple[int, ...]

    @property
    def candidate_count(self) -> int:
        return self.spec.combinations() * len(self.sizes) * len(self.seeds)


def _resolve(manifest: Manifest, source: Path) -> list[_Resolved]:
    resolved = []
    for index, spec in enumerate(manifest.prompts):
        where = _where(source, index, spec)
        settings = _merged_settings(manifest.defaults, spec)
        model = settings.get("model")
        if model is None:
            raise ManifestError(f"{where}: no model; set defaults.model or this prompt's model.")
        sizes = _resolve_sizes(settings, where)
        resolved.append(_Resolved(index, spec, where, settings, model, sizes, _resolve_seeds(settings, where)))
    return resolved


def expand(manifest: Manifest, source: Path, max_candidates: int = MAX_CANDIDATES_PER_RUN) -> Plan:
    """Expand prompt templates x variables x aspect ratios into jobs; ManifestError on conflicts, PolicyError when the
    plan would exceed `max_candidates` (computed arithmetically, before a single job is built)."""
    resolved = _resolve(manifest, source)
    total = sum(item.candidate_count for item in resolved)
    if total > max_candidates:
        raise PolicyError(
            f"{source} plans {total:,} candidates, over max_candidates_per_run {max_candidates:,}; split the batch "
            "or reduce its vars, aspect ratios or candidates."
        )
    jobs: list[Job] = []
    seen_keys: dict[str, str] = {}
    for item in resolved:
        spec, settings, where = item.spec, item.settings, item.where
        prompt_id = spec.id or f"p{item.index + 1}"
        names = list(spec.vars)
        for combo in itertools.product(*(spec.vars[name] for name in names)):
            variables = dict(zip(names, combo, strict=True))
            text = spec.prompt.format(**variables)
            for aspect, width, height in item.sizes:
                variant = ", ".join([*(f"{k}={v}" for k, v in variables.items()), *([aspect] if aspect else [])])
                job_fields = {
                    "prompt": text,
                    "negative_prompt": settings["negative_prompt"],
                    "model": item.model,
                    "width": width,
                    "height": height,
                    "steps": settings["steps"],
                    "guidance": float(settings["guidance"]),
                    "scheduler": settings["scheduler"],
                }
                job_key = canonical_digest(job_fields)[:16]
                if job_key in seen_keys:
                    raise ManifestError(
                        f"{where}: expands to the same job as {seen_keys[job_key]} ({text!r} at {width}x{height}); "
                        "remove the duplicate or change a setting."
                    )
                seen_keys[job_key] = f"{prompt_id} [{variant}]" if variant else prompt_id
                jobs.append(
                    Job(
                        job_key=job_key,
                        prompt_id=prompt_id,
                        variant=variant,
                        variables=variables,
                        seeds=item.seeds,
                        keep_top_k=settings["keep_top_k"],
                        output_format=str(OutputFormat(settings["output_format"])),
                        **job_fields,
                    )
                )
    # Only what makes pixels names the run: seeds, keep_top_k and output_format can change and the run continues.
    plan_digest = canonical_digest({"campaign": manifest.campaign.id, "jobs": sorted(j.job_key for j in jobs)})
    return Plan(
        source=source,
        campaign_id=manifest.campaign.id,
        campaign_name=manifest.campaign.name,
        run_id=f"{manifest.campaign.id}-{plan_digest[:8]}",
        jobs=tuple(jobs),
    )


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file; ManifestError names file, line, field, value and what is allowed."""
    loaded = load_yaml(path, ManifestError, "manifest", MANIFEST_LIMITS)
    return validate_yaml(loaded, Manifest, ManifestError, "manifest")


def load_plan(path: Path, max_candidates: int = MAX_CANDIDATES_PER_RUN) -> Plan:
    """Load a manifest and expand it, refusing (before expanding) a plan of more than `max_candidates`."""
    return expand(load_manifest(path), path, max_candidates)


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of the manifest format."""
    return json_schema(Manifest, "manifest")
