"""Does word order carry information? A word-class n-gram model that tells prose from
word salad: real words, real punctuation, in an order no writer would choose.

Why the character model (``stages/ngram_lm.py``) cannot: it sees a few letters at a
time, and shuffled words are spelled right, so spun SEO text built from a real article
scores the article's perplexity. What shuffling destroys is syntax: "of the", "it is",
"can be" become "the of", "be it". Syntax lives in the function words, so each token
is mapped to a small alphabet: the ``vocabulary_size`` most frequent words of the
reference text (articles, prepositions, auxiliaries, punctuation) keep their identity,
every other word becomes a class by its shape (capitalised or not, and a suffix such
as -ly, -ing, -ed, -tion, -s), numbers one class. A token n-gram model with
interpolated Kneser-Ney smoothing (the character model's code, on one symbol per
token) is fitted on the encoded reference text.

The measure is the **word-order gain**: bits per token the n-gram model saves over the
unigram distribution of the same symbols,

    gain = log2 PP_unigram(doc) - log2 PP_ngram(doc)

Prose gains (context predicts the next word class); shuffled words lose, because the
model has learned that their neighbours rarely meet. The vocabulary overlap that a
plain perplexity would also measure cancels out, which is what makes 0 a principled
threshold: below it, the document's word order explains less than no order at all.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from stages.ngram_lm import CharNgramLM

_TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*|\d+(?:[.,]\d+)*|[^\w\s]")
_SUFFIXES = ("ly", "ing", "ed", "tion", "s", "al", "er")
# Symbols are private-use code points: no case, no digits, no spaces, so the character
# model's normalisation leaves an encoded text as it is.
_WORD_BASE = 0xE000  # vocabulary words, in frequency order
_CLASS_BASE = 0xF000  # shape classes of the other tokens
_NUMBER = chr(_CLASS_BASE)
_OTHER_MARK = chr(_CLASS_BASE + 1)
_FIRST_SHAPE = _CLASS_BASE + 2
MAX_VOCABULARY = _CLASS_BASE - _WORD_BASE


def tokens(text: str) -> list[str]:
    """Words, numbers and single punctuation marks, in order."""
    return _TOKEN.findall(text)


class WordOrderModel:
    """Fit with ``fit``, persist with ``save``/``load``, measure with ``order_gain``."""

    def __init__(self, vocabulary: list[str], lm: CharNgramLM) -> None:
        if len(vocabulary) > MAX_VOCABULARY:
            raise ValueError(f"vocabulary of {len(vocabulary)} words, at most {MAX_VOCABULARY}")
        self.vocabulary = vocabulary
        self._encode = self._encoder(vocabulary)
        self.lm = lm
        # The unigram model of the same symbols: every symbol occurrence is the last
        # character of exactly one highest-order n-gram (the text is padded).
        unigrams: Counter[str] = Counter()
        for gram, count in lm.counts.items():
            unigrams[gram[-1]] += count
        self.unigram = CharNgramLM(1, dict(unigrams))

    @classmethod
    def fit(
        cls, texts: Iterable[str], order: int = 3, vocabulary_size: int = 150
    ) -> WordOrderModel:
        texts = list(texts)
        if not 1 <= vocabulary_size <= MAX_VOCABULARY:
            raise ValueError(f"vocabulary_size must be 1..{MAX_VOCABULARY}")
        frequency = Counter(token.casefold() for text in texts for token in tokens(text))
        vocabulary = [word for word, _ in frequency.most_common(vocabulary_size)]
        encoder = cls._encoder(vocabulary)
        lm = CharNgramLM.fit((encoder(text) for text in texts), order)
        return cls(vocabulary, lm)

    @staticmethod
    def _encoder(vocabulary: list[str]) -> Callable[[str], str]:
        """The text -> symbols function for this vocabulary."""
        index = {word: i for i, word in enumerate(vocabulary)}

        def encode(text: str) -> str:
            out = []
            for token in tokens(text):
                folded = token.casefold()
                if folded in index:
                    out.append(chr(_WORD_BASE + index[folded]))
                elif token[0].isdigit():
                    out.append(_NUMBER)
                elif not token[0].isalpha():
                    out.append(_OTHER_MARK)
                else:
                    shape = next(
                        (i for i, s in enumerate(_SUFFIXES) if folded.endswith(s)), len(_SUFFIXES)
                    )
                    out.append(chr(_FIRST_SHAPE + 2 * shape + token[0].isupper()))
            return "".join(out)

        return encode

    def encode(self, text: str) -> str:
        """One symbol per token (see the module docstring)."""
        return self._encode(text)

    def order_gain(self, text: str, min_tokens: int = 1) -> float | None:
        """Bits per token the n-gram model saves over the unigram model; None for a
        text with fewer than ``min_tokens`` tokens (too short to judge)."""
        symbols = self.encode(text)
        if len(symbols) < max(min_tokens, 1):
            return None
        ngram_bits, count = self.lm.log2_prob(symbols)
        unigram_bits, _ = self.unigram.log2_prob(symbols)
        return (ngram_bits - unigram_bits) / count

    def save(self, path: str | Path) -> None:
        grams = sorted(self.lm.counts)
        longest = max(map(len, self.vocabulary), default=1)
        with open(path, "wb") as stream:  # np.savez would append ".npz" to a str path
            np.savez_compressed(
                stream,
                order=np.array(self.lm.order, np.int64),
                grams=np.array(grams, dtype=f"<U{self.lm.order}"),
                counts=np.array([self.lm.counts[g] for g in grams], np.int64),
                vocabulary=np.array(self.vocabulary, dtype=f"<U{longest}"),
            )

    @classmethod
    def load(cls, path: str | Path) -> WordOrderModel:
        with np.load(path, allow_pickle=False) as data:
            missing = {"order", "grams", "counts", "vocabulary"} - set(data.files)
            if missing:
                raise ValueError(f"{path}: not a word-order model (no {sorted(missing)})")
            order = int(data["order"])
            counts = dict(zip(data["grams"].tolist(), data["counts"].tolist(), strict=True))
            vocabulary = data["vocabulary"].tolist()
        return cls(vocabulary, CharNgramLM(order, counts))


def shuffled_words(text: str, seed: int | str = 0) -> str:
    """The text's words in a random order, capitalisation and sentence marks redone:
    a synthetic word salad, the negative train-quality reports the gain on."""
    words = [token for token in tokens(text) if token[0].isalnum()]
    random.Random(seed).shuffle(words)
    sentences = [words[i : i + 12] for i in range(0, len(words), 12)]
    return " ".join(" ".join([s[0][:1].upper() + s[0][1:], *s[1:]]) + "." for s in sentences if s)


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.median(kept)), 3) if kept else None
