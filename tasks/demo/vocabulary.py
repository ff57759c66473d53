"""A CLIP-format BPE tokenizer for the demo domain: byte fallback plus one token per domain word.

CLIP's own vocabulary has 49,408 entries; at the demo models' width its embedding table alone would outweigh the
rest of the network several times. This one keeps CLIP's format (``vocab.json`` + ``merges.txt``, byte-level
symbols, ``</w>`` word ends, start/end tokens last so open_clip's argmax pooling finds the end token), so
``CLIPTokenizer`` and ``AutoTokenizer`` load it like any CLIP tokenizer; words outside the domain still tokenize,
letter by letter.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tasks.demo.shapes import COLOURS, RELATIONS, SHAPES

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
DOMAIN_WORDS: tuple[str, ...] = tuple(
    sorted({"a", "an", "on", "background", *COLOURS, *SHAPES, *(w for r in RELATIONS for w in r.split())})
)


def _byte_symbols() -> list[str]:
    from open_clip.tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word, lowest-ranked pair first, as CLIP's tokenizer does it."""
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), len(ranks) + 1), i) for i, (a, b) in enumerate(itertools.pairwise(symbols))]
        rank, i = min(pairs)
        if rank > len(ranks):
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def build_vocabulary(words: tuple[str, ...] = DOMAIN_WORDS) -> tuple[dict[str, int], list[str]]:
    """Vocabulary and merge list in which every word of ``words`` encodes to a single token."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        symbols = _apply_merges([*word[:-1], word[-1] + "</w>"], ranks)
        while len(symbols) > 1:  # merge left to right until the word is one token
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            symbols = [symbols[0] + symbols[1], *symbols[2:]]
    chars = _byte_symbols()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return vocab, [f"{a} {b}" for a, b in merges]


def write_tokenizer(folder: Path, context_length: int) -> None:
    """Write a loadable CLIP tokenizer (vocab.json, merges.txt, tokenizer.json, configs) into ``folder``."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    # Positional file paths: the one call both transformers 5 (vocab, merges) and 4 (vocab_file, merges_file) take.
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=context_length)
    tokenizer.save_pretrained(folder)
