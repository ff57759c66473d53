"""The `safety` section of a policy: what prompts and images count as unsafe, and which filters run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Filter names as they appear in logs, the ledger and `disabled_filters()`.
PROMPT_BLOCKLIST = "prompts.blocklist"
PROMPT_SEMANTIC = "prompts.semantic"
NSFW = "nsfw"
CONCEPTS = "concepts"
ALL_FILTERS = (PROMPT_BLOCKLIST, PROMPT_SEMANTIC, NSFW, CONCEPTS)

DEFAULT_BLOCKLIST: tuple[str, ...] = (
    # sexual content
    "nude",
    "nudity",
    "naked",
    "nsfw",
    "porn",
    "porno",
    "pornographic",
    "pornography",
    "sex",
    "sexual",
    "topless",
    "bottomless",
    "erotic",
    "hentai",
    "fetish",
    "genitals",
    "genitalia",
    "nipple",
    "xxx",
    "onlyfans",
    # minors in sexual context
    "loli",
    "lolicon",
    "underage",
    "child porn",
    # gore and graphic violence
    "gore",
    "gory",
    "gruesome",
    "decapitated",
    "decapitation",
    "beheading",
    "beheaded",
    "dismembered",
    "dismemberment",
    "mutilated",
    "mutilation",
    "disembowelled",
    "disemboweled",
    "corpse",
    "bloodbath",
    "massacre",
    "torture",
    # self-harm
    "suicide",
    "self harm",
    # hate
    "swastika",
    "nazi",
    "kkk",
    "white power",
)

DEFAULT_PROMPT_CONCEPTS: tuple[str, ...] = (
    "a naked person with no clothes",
    "people having sex",
    "a sexually explicit pornographic scene",
    "a child in a sexual or seductive pose",
    "gore: blood, guts and severed body parts",
    "a dead body or corpse",
    "a person killed violently, bleeding",
    "a person hanging themselves or committing suicide",
    "self-harm, a person cutting themselves",
    "nazi flags, swastikas and white supremacist hate symbols",
)

# Calibrated on 16 unsafe paraphrases without blocklist words vs 25 benign marketing prompts: 14/16 caught, 0/25
# blocked (highest benign 0.403, a Halloween fake-blood prompt). See tests/test_safety.py for the probes.
DEFAULT_PROMPT_THRESHOLD = 0.42
DEFAULT_NSFW_THRESHOLD = 0.5
DEFAULT_IMAGE_CONCEPTS: tuple[tuple[str, float], ...] = (
    ("a photo of a naked person", 0.28),
    ("sexually explicit content", 0.28),
    ("graphic gore, blood and wounds", 0.28),
    ("a dead body", 0.28),
    ("a nazi swastika", 0.28),
)


class SemanticScreenPolicy(BaseModel):
    """Semantic prompt screening: cosine similarity of the prompt to unsafe concept descriptions."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Embed each prompt and block it when it is close to a listed concept.")
    concepts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROMPT_CONCEPTS),
        description="Descriptions of unsafe content, in plain words (e.g. 'graphic violence, gore and blood').",
    )
    threshold: float = Field(
        DEFAULT_PROMPT_THRESHOLD,
        ge=-1,
        le=1,
        description="Block when the cosine similarity (sentence-embedding model all-MiniLM-L6-v2) between the "
        "prompt and any concept is at or above this value. Lower is stricter.",
    )

    @field_validator("concepts")
    @classmethod
    def _clean(cls, concepts: list[str]) -> list[str]:
        return _non_blank(concepts, "semantic concept")

    @model_validator(mode="after")
    def _needs_concepts(self) -> SemanticScreenPolicy:
        if self.enabled and not self.concepts:
            raise ValueError("semantic screening is enabled but lists no concepts; list some or set enabled: false")
        return self


class PromptScreenPolicy(BaseModel):
    """Prompt screening before generation: a word blocklist and a semantic screen."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Screen prompts before any image is generated.")
    blocklist: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKLIST),
        description="Words and phrases that block a prompt. Matched as whole words (a plural 's'/'es' also "
        "matches) after case folding, Unicode NFKC, look-alike letters, leetspeak and separators inside words "
        "are normalised. An empty list turns the blocklist off (reported as off).",
    )
    semantic: SemanticScreenPolicy = Field(
        default_factory=SemanticScreenPolicy, description="Semantic screening with a sentence-embedding model."
    )

    @field_validator("blocklist")
    @classmethod
    def _clean(cls, terms: list[str]) -> list[str]:
        return _non_blank(terms, "blocklist term")


class NsfwPolicy(BaseModel):
    """The open_nsfw image classifier."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Score every candidate image with the open_nsfw classifier.")
    threshold: float = Field(
        DEFAULT_NSFW_THRESHOLD,
        ge=0,
        le=1,
        description="Flag an image whose NSFW probability is at or above this value. Lower is stricter.",
    )


class ConceptRule(BaseModel):
    """One concept the CLIP concept filter looks for, with its own threshold."""

    model_config = ConfigDict(extra="forbid")
    concept: str = Field(..., min_length=1, description="Text describing unsafe content, e.g. 'a photo of a gun'.")
    threshold: float = Field(
        ...,
        ge=-1,
        le=1,
        description="Flag an image whose CLIP cosine similarity to the concept text is at or above this value. "
        "Depends on the CLIP model; calibrate with `assetmint safety eval`.",
    )

    @field_validator("concept")
    @classmethod
    def _strip(cls, concept: str) -> str:
        if not concept.strip():
            raise ValueError("concept must not be blank")
        return concept.strip()


class ConceptFilterPolicy(BaseModel):
    """CLIP concept filter, computed from the image embeddings the scorer already made."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Compare each image's CLIP embedding with the listed concepts.")
    rules: list[ConceptRule] = Field(
        default_factory=lambda: [ConceptRule(concept=c, threshold=t) for c, t in DEFAULT_IMAGE_CONCEPTS],
        description="Concepts with per-concept cosine thresholds. An empty list turns the filter off (reported "
        "as off).",
    )

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[ConceptRule]) -> list[ConceptRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.concept in seen:
                raise ValueError(f"concept {rule.concept!r} is listed twice")
            seen.add(rule.concept)
        return rules


class SafetyPolicy(BaseModel):
    """What is unsafe: prompt screening, the NSFW classifier, the CLIP concept filter, and overrides."""

    model_config = ConfigDict(extra="forbid")
    prompts: PromptScreenPolicy = Field(
        default_factory=PromptScreenPolicy, description="Prompt screening (blocklist and semantic) before generation."
    )
    nsfw: NsfwPolicy = Field(default_factory=NsfwPolicy, description="open_nsfw classifier on generated images.")
    concepts: ConceptFilterPolicy = Field(
        default_factory=ConceptFilterPolicy, description="CLIP concept filter on generated images."
    )
    human_override: bool = Field(
        False,
        description="Allow a reviewer to approve a flagged candidate; the reviewer and the reason are recorded "
        "on the candidate and in its Content Credential. Blocked prompts are never overridable.",
    )

    def disabled_filters(self) -> list[str]:
        """Names of every filter that will not run (the flow logs these loudly and records them)."""
        off: list[str] = []
        if not self.prompts.enabled or not self.prompts.blocklist:
            off.append(PROMPT_BLOCKLIST)
        if not self.prompts.enabled or not self.prompts.semantic.enabled:
            off.append(PROMPT_SEMANTIC)
        if not self.nsfw.enabled:
            off.append(NSFW)
        if not self.concepts.enabled or not self.concepts.rules:
            off.append(CONCEPTS)
        return off

    def image_filters_on(self) -> list[str]:
        """Names of the image filters that will run."""
        off = set(self.disabled_filters())
        return [name for name in (NSFW, CONCEPTS) if name not in off]


def _non_blank(values: list[str], what: str) -> list[str]:
    """Strip entries; refuse blank ones and duplicates, naming them."""
    cleaned: list[str] = []
    for value in values:
        text = value.strip()
        if not text:
            raise ValueError(f"{what} must not be blank")
        if text in cleaned:
            raise ValueError(f"{what} {text!r} is listed twice")
        cleaned.append(text)
    return cleaned
