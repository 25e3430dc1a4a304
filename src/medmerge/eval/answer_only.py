"""Marker-forbidden, answer-only decoding (the study's later version): the think tags and the
reasoning markers cannot be generated, so what is left is the answer alone.

A forbidden phrase is banned as token sequences: each spelling (as listed, capitalised, after
a space, after a newline) tokenised on its own, and its last token blocked wherever the
tokens before it have just been generated (transformers' `bad_words_ids`, vLLM's
`bad_words`). A model can still spell a marker with other tokens; the leak rates measured on
the outputs say how much got through, so the mode is checked, not assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medmerge.eval.leakage import DEFAULT_MARKERS

THINK_TAGS = ("<think>", "</think>")


def spellings(word: str, prefixes: Sequence[str]) -> list[str]:
    """`word` as written and capitalised, each after every prefix ("" for none)."""
    return [prefix + w for w in dict.fromkeys((word, word.capitalize())) for prefix in prefixes]


def forbidden_spellings(markers: Sequence[str] = DEFAULT_MARKERS) -> list[str]:
    """The think tags and every spelling of each marker that the mode bans."""
    banned = list(THINK_TAGS)
    for marker in markers:
        banned += spellings(marker, ("", " ", "\n"))
    return list(dict.fromkeys(banned))


def forbidden_sequences(
    tokenizer: Any, markers: Sequence[str] = DEFAULT_MARKERS
) -> list[list[int]]:
    """Token-id sequences of `forbidden_spellings` (the leading space or newline kept only
    where it is a token of its own would start a new word, so both forms are listed)."""
    sequences = []
    for spelling in forbidden_spellings(markers):
        ids = list(tokenizer(spelling, add_special_tokens=False)["input_ids"])
        if ids and ids not in sequences:
            sequences.append(ids)
    return sequences
