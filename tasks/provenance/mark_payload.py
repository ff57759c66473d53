"""The ``spreadTile`` payload: an asset key with a keyed MAC, protected by a convolutional code.

Layout (version 1)::

    info  = key: 32 | tag: 32          tag = HMAC-SHA256(secret, DOMAIN | key as 4 bytes)[:4]
    word  = info XOR HMAC-SHA256(secret, MASK_DOMAIN)[:8]      (the key is not readable without the secret)
    coded = rate-1/3 convolutional code, constraint length 7 (generators 133, 171, 165 octal), 6 tail bits
            -> 3 * (64 + 6) = 210 coded bits, the bits ``spread_tile`` embeds

Decoding runs a soft-decision Viterbi decoder over the soft coded bits the signal decoder measured, then, for
each secret the deployment knows (current and retired), removes the mask and checks the tag. The code corrects
errors (one coded bit in ten read wrong always decodes, one in eight nearly always; see tests); the tag decides.
An image whose bits are noise yields a 64-bit word whose tag matches with probability 2**-32 per secret and
attempt. The audit makes 1 + ``spread_tile.HYPOTHESES`` (7) attempts per image, so with one secret the designed
false-match rate is 7 * 2**-32 ~= 1.6e-9 per image; a match must then also name a key the ledger has issued
and pixels that look like that asset.

Without the secret nobody can compute the tag of a key, so a mark cannot be forged for an asset whose mark
they have not seen; copying a real mark into other pixels is caught by the audit's likeness check.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from tasks.core.errors import WatermarkError

if TYPE_CHECKING:
    import numpy as np

KEY_BITS = 32
TAG_BITS = 32
INFO_BITS = KEY_BITS + TAG_BITS
CONSTRAINT = 7
GENERATORS = (0o133, 0o171, 0o165)
CODED_BITS = len(GENERATORS) * (INFO_BITS + CONSTRAINT - 1)
MAX_KEY = (1 << KEY_BITS) - 1
_DOMAIN = b"assetmint/watermark/spreadTile/v1/tag\x00"
_MASK_DOMAIN = b"assetmint/watermark/spreadTile/v1/mask\x00"
_STATES = 1 << (CONSTRAINT - 1)


@dataclass(frozen=True)
class Recovered:
    """A key whose tag matched, and the index of the secret that matched it."""

    key: int
    secret_index: int


def _tag(secret: bytes, key: int) -> int:
    digest = hmac.new(secret, _DOMAIN + key.to_bytes(4, "big"), hashlib.sha256).digest()
    return int.from_bytes(digest[: TAG_BITS // 8], "big")


def _mask(secret: bytes) -> int:
    return int.from_bytes(hmac.new(secret, _MASK_DOMAIN, hashlib.sha256).digest()[: INFO_BITS // 8], "big")


def check_key(key: int) -> None:
    """Refuse a key the payload cannot carry (0 is reserved)."""
    if isinstance(key, bool) or not isinstance(key, int):
        raise WatermarkError(f"watermark key must be an integer, got {key!r}")
    if not 1 <= key <= MAX_KEY:
        raise WatermarkError(
            f"watermark key {key} is out of range for spreadTile: keys run from 1 to {MAX_KEY}"
            + (" (key 0 is reserved)" if key == 0 else "")
        )


def info_word(key: int, secret: bytes) -> int:
    """The 64-bit word embedded for ``key`` under ``secret`` (key and tag, masked)."""
    check_key(key)
    return ((key << TAG_BITS) | _tag(secret, key)) ^ _mask(secret)


def _bits(word: int, count: int) -> list[int]:
    return [(word >> (count - 1 - i)) & 1 for i in range(count)]


@cache
def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """Output bits per (state, input bit), and the signs the Viterbi metric uses."""
    import numpy as np

    outputs = np.zeros((_STATES, 2, len(GENERATORS)), dtype=np.int8)
    for state in range(_STATES):
        for bit in (0, 1):
            register = (bit << (CONSTRAINT - 1)) | state
            outputs[state, bit] = [bin(register & g).count("1") & 1 for g in GENERATORS]
    return outputs, 2.0 * outputs.astype(np.float64) - 1.0


def encode(key: int, secret: bytes) -> np.ndarray:
    """The coded bits (uint8 0/1, ``CODED_BITS`` long) for ``key`` under ``secret``."""
    import numpy as np

    outputs, _ = _trellis()
    state, coded = 0, []
    for bit in _bits(info_word(key, secret), INFO_BITS) + [0] * (CONSTRAINT - 1):
        coded.extend(outputs[state, bit])
        state = ((bit << (CONSTRAINT - 1)) | state) >> 1
    return np.array(coded, dtype=np.uint8)


def viterbi(soft: np.ndarray) -> int:
    """Most likely 64-bit word for soft coded bits (positive means 1), by soft-decision Viterbi decoding."""
    import numpy as np

    if len(soft) != CODED_BITS:
        raise WatermarkError(f"spreadTile payloads have {CODED_BITS} coded bits, got {len(soft)}")
    _, signs = _trellis()
    steps = INFO_BITS + CONSTRAINT - 1
    per_step = np.asarray(soft, dtype=np.float64).reshape(steps, len(GENERATORS))
    state = np.arange(_STATES)
    low_parent = (state << 1) & (_STATES - 1)  # state s was reached from s<<1 or s<<1|1 by input bit s>>5
    high_parent = low_parent | 1
    bit = state >> (CONSTRAINT - 2)
    metric = np.full(_STATES, -np.inf)
    metric[0] = 0.0
    chose_high = np.zeros((steps, _STATES), dtype=bool)
    for t in range(steps):
        branch = signs @ per_step[t]
        from_low = metric[low_parent] + branch[low_parent, bit]
        from_high = metric[high_parent] + branch[high_parent, bit]
        if t >= INFO_BITS:  # tail: only zeros were sent
            from_low = np.where(bit == 1, -np.inf, from_low)
            from_high = np.where(bit == 1, -np.inf, from_high)
        chose_high[t] = from_high > from_low
        metric = np.maximum(from_low, from_high)
    word, current = 0, 0
    decided = []
    for t in range(steps - 1, -1, -1):
        decided.append(current >> (CONSTRAINT - 2))
        current = int(high_parent[current] if chose_high[t, current] else low_parent[current])
    for value in reversed(decided[CONSTRAINT - 1 :]):
        word = (word << 1) | int(value)
    return word


def recover(soft: np.ndarray, secrets: Sequence[bytes]) -> Recovered | None:
    """The key carried by soft coded bits under one of ``secrets``, or None when no tag matches."""
    word = viterbi(soft)
    for index, secret in enumerate(secrets):
        info = word ^ _mask(secret)
        key, tag = info >> TAG_BITS, info & ((1 << TAG_BITS) - 1)
        if key != 0 and hmac.compare_digest(tag.to_bytes(4, "big"), _tag(secret, key).to_bytes(4, "big")):
            return Recovered(key, index)
    return None


def false_match_rate(hypotheses: int, secrets: int = 1) -> float:
    """Designed probability that an unmarked image yields a key: one 32-bit tag check per hypothesis and secret."""
    return hypotheses * secrets / 2.0**TAG_BITS
