"""A character n-gram language model with interpolated Kneser-Ney smoothing, small
enough to fit on a few megabytes of reference text in a second and to score a
document in milliseconds.

Why characters, not words: the model is fitted on a small reference set (the quality
classifier's positives), where a word model would see most words of a new document
for the first time and its perplexity would measure vocabulary overlap rather than
fluency. Character n-grams need no tokenizer (Chinese and Russian work as they are)
and still tell prose from keyword lists, symbol soup and markup debris.

Smoothing (Chen & Goodman 1998, interpolated Kneser-Ney with one discount per order):

    P_k(w | h) = (max(c_k(h w) - D_k, 0) + D_k * N1+(h .) * P_{k-1}(w | h')) / c_k(h .)

where h' drops the first character of h, ``c_k`` is the raw count at the highest
order and the continuation count N1+(. h w) (how many different characters precede
h w) below it, ``D_k = n1 / (n1 + 2 n2)`` from the count-of-counts, an unseen context
backs off entirely, and the unigram level interpolates with a uniform distribution
over the characters seen plus one unknown. Every statistic follows from the
highest-order counts alone (the text is padded, so every lower-order n-gram occurrence
is the suffix of a highest-order one), which is all the saved file holds:
``np.savez_compressed`` of a fixed-width unicode array and an int64 array (no pickle).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

PAD = "\x02"  # history before the first character; never a predicted character
_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s+")
_FALLBACK_DISCOUNT = 0.5  # when an order has no count-of-counts to estimate from


def normalize_text(text: str) -> str:
    """What the model sees: case-folded, digits as "0", whitespace runs as one space.
    Numbers and layout say little about fluency and would fragment the counts."""
    text = _DIGITS.sub("0", text.casefold())
    text = text.replace(PAD, " ").replace("\x00", " ")
    return _SPACES.sub(" ", text).strip()


class CharNgramLM:
    """Fit with ``fit``, persist with ``save``/``load``, score with ``perplexity``."""

    def __init__(self, order: int, counts: dict[str, int]) -> None:
        if order < 1:
            raise ValueError("order must be >= 1")
        if not counts:
            raise ValueError("no n-gram counts: the model was fitted on empty text")
        self.order = order
        self.counts = counts
        # Per order k (1..order): n-gram -> count, context -> (total, distinct next chars).
        self.grams: list[dict[str, int]] = [{} for _ in range(order + 1)]
        self.contexts: list[dict[str, tuple[int, int]]] = [{} for _ in range(order + 1)]
        self.discounts = [0.0] * (order + 1)
        self._build()

    @classmethod
    def fit(cls, texts: Iterable[str], order: int = 4) -> CharNgramLM:
        counts: Counter[str] = Counter()
        for text in texts:
            padded = PAD * (order - 1) + normalize_text(text)
            counts.update(padded[i : i + order] for i in range(len(padded) - order + 1))
        return cls(order, dict(counts))

    def _build(self) -> None:
        level = self.counts
        for k in range(self.order, 0, -1):
            self.grams[k] = level
            contexts: dict[str, list[int]] = {}
            for gram, count in level.items():
                entry = contexts.setdefault(gram[:-1], [0, 0])
                entry[0] += count
                entry[1] += 1
            self.contexts[k] = {h: (total, types) for h, (total, types) in contexts.items()}
            self.discounts[k] = _discount(level.values())
            # Continuation counts for the order below: distinct left extensions.
            level = Counter(gram[1:] for gram in level)
        self.vocabulary = {gram[-1] for gram in self.grams[1]}

    def _prob(self, history: str, char: str) -> float:
        prob = 1.0 / (len(self.vocabulary) + 1)  # uniform, with one slot for unknowns
        for k in range(1, self.order + 1):
            context = history[len(history) - (k - 1) :] if k > 1 else ""
            seen = self.contexts[k].get(context)
            if seen is None:
                break  # longer contexts contain this one: unseen as well
            total, types = seen
            discount = self.discounts[k]
            count = self.grams[k].get(context + char, 0)
            prob = (max(count - discount, 0.0) + discount * types * prob) / total
        return prob

    def log2_prob(self, text: str) -> tuple[float, int]:
        """(log2 probability of the normalised text, number of characters scored)."""
        text = normalize_text(text)
        padded = PAD * (self.order - 1) + text
        total = 0.0
        for i in range(self.order - 1, len(padded)):
            total += math.log2(self._prob(padded[i - self.order + 1 : i], padded[i]))
        return total, len(text)

    def perplexity(self, text: str) -> float | None:
        """Per-character perplexity; None for text with nothing to score."""
        log2_prob, chars = self.log2_prob(text)
        return None if chars == 0 else 2.0 ** (-log2_prob / chars)

    def save(self, path: str | Path) -> None:
        grams = sorted(self.counts)
        with open(path, "wb") as stream:  # np.savez would append ".npz" to a str path
            np.savez_compressed(
                stream,
                order=np.array(self.order, np.int64),
                grams=np.array(grams, dtype=f"<U{self.order}"),
                counts=np.array([self.counts[g] for g in grams], np.int64),
            )

    @classmethod
    def load(cls, path: str | Path) -> CharNgramLM:
        with np.load(path, allow_pickle=False) as data:
            order = int(data["order"])
            # Fixed-width arrays drop trailing NULs; PAD is never last, so nothing is lost.
            counts = dict(zip(data["grams"].tolist(), data["counts"].tolist(), strict=True))
        return cls(order, counts)


def _discount(counts: Iterable[int]) -> float:
    histogram = Counter(c for c in counts if c <= 2)
    n1, n2 = histogram[1], histogram[2]
    if n1 == 0 or n1 + 2 * n2 == 0:
        return _FALLBACK_DISCOUNT
    return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)
