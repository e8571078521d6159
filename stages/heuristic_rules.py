"""The measures behind the heuristic filters (Gopher quality and repetition, C4, FineWeb)
and the tables that tie each measure to its threshold name and reason string.

Sources: Gopher = Rae et al. 2021, appendix A.1.1 and table A1
(https://arxiv.org/abs/2112.11446); C4 = Raffel et al. 2020, section 2.2
(https://jmlr.org/papers/v21/20-074.html) and TFDS ``c4_utils.clean_page``; FineWeb =
Penedo et al. 2024 (https://arxiv.org/abs/2406.17557). datatrove's filters are the
reference implementation we checked our definitions against; where we differ, the
measure's docstring says so.

Words. The papers do not pin a tokenizer, and datatrove uses NLTK or spaCy per language.
We split on whitespace instead: fast, the same for every language, and it keeps
``"hello,"`` one word. A *token* is a whitespace-separated run; a *word* is a token's
core from its first to its last letter or digit (``"(hello),"`` -> ``"hello"``), and a
token without any letter or digit (``"|"``, ``"--"``) is not a word.

Chinese and Japanese are written without spaces, so whitespace makes a whole clause one
"word". For them (``DocView(text, words="cjk")``) every Han or kana character is a word
of its own, as character-level models of those languages treat them, and the runs of
other letters between them are words as before. Every ratio then has a meaningful
denominator ("#" per word is "#" per character), and the n-gram repetition rules work on
character n-grams (two characters for each word of the rule's n), so a passage
repeated on one line is caught; C4's words per line count the characters at two to a
word too (``line_words``). Thresholds on word lengths describe English words and stay
off for these languages (``stages/heuristics.py`` says which).

Lines C4 removes. C4's line filter drops lines of fewer than three words (menus, bylines,
link lists) from the text that is kept, so Gopher's line rules, which run before it in
FineWeb's order, count only the lines of at least that many words
(``DocView(min_line_words=...)``): a menu repeated under an article is not the article's
repetition.

Tables. trafilatura writes a table row as one line, ``| cell | cell |``. Line rules were
written for lines of running text, so the rules see each non-empty cell as a line of
its own (``rule_view``); a row of empty cells is layout, not text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from itertools import filterfalse
from typing import Any

import numpy as np

Params = Mapping[str, Any]
Measure = Callable[["DocView", Params], float]

# --- reason strings: one per rule, named after the rule and its direction -------------
REASON_GOPHER_TOO_FEW_WORDS = "gopher_too_few_words"
REASON_GOPHER_TOO_MANY_WORDS = "gopher_too_many_words"
REASON_GOPHER_SHORT_MEAN_WORD = "gopher_short_mean_word"
REASON_GOPHER_LONG_MEAN_WORD = "gopher_long_mean_word"
REASON_GOPHER_MANY_HASHES = "gopher_many_hashes"
REASON_GOPHER_MANY_ELLIPSES = "gopher_many_ellipses"
REASON_GOPHER_BULLET_LINES = "gopher_bullet_lines"
REASON_GOPHER_ELLIPSIS_LINES = "gopher_ellipsis_lines"
REASON_GOPHER_FEW_ALPHA_WORDS = "gopher_few_alpha_words"
REASON_GOPHER_FEW_STOP_WORDS = "gopher_few_stop_words"
REASON_GOPHER_DUP_PARAGRAPH_FRACTION = "gopher_dup_paragraph_fraction"
REASON_GOPHER_DUP_PARAGRAPH_CHAR_FRACTION = "gopher_dup_paragraph_char_fraction"
REASON_GOPHER_DUP_LINE_FRACTION = "gopher_dup_line_fraction"
REASON_GOPHER_DUP_LINE_CHAR_FRACTION = "gopher_dup_line_char_fraction"
TOP_NGRAM_SIZES = (2, 3, 4)
DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)
REASON_GOPHER_TOP_NGRAM = {n: f"gopher_top_{n}gram_char_fraction" for n in TOP_NGRAM_SIZES}
REASON_GOPHER_DUP_NGRAM = {n: f"gopher_dup_{n}gram_char_fraction" for n in DUP_NGRAM_SIZES}
REASON_C4_LOREM_IPSUM = "c4_lorem_ipsum"
REASON_C4_CURLY_BRACKET = "c4_curly_bracket"
REASON_C4_TOO_FEW_SENTENCES = "c4_too_few_sentences"
REASON_C4_NO_LINES_LEFT = "c4_no_lines_left"
REASON_FINEWEB_LOW_LINE_PUNCTUATION = "fineweb_low_line_punctuation"
REASON_FINEWEB_SHORT_LINES = "fineweb_short_lines"
REASON_FINEWEB_DUP_LINE_CHARS = "fineweb_dup_line_chars"
REASON_FINEWEB_LIST_LIKE = "fineweb_list_like"

# --- word lists and character sets -------------------------------------------------------
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher
# Gopher says "a bullet point"; datatrove checks "•" and "-". We add the other common ones.
BULLETS = ("•", "●", "○", "◦", "▪", "▫", "‣", "⁃", "·", "-", "*")
ELLIPSES = ("...", "…")
# C4 keeps lines ending in ! . " ? (TFDS and datatrove also accept '). c4_clean checks
# the multilingual FineWeb set below: the same for English, and a Chinese line ending in
# 。 is not "unterminated".
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
# FineWeb: datatrove uses Unicode's sentence terminals plus quotes; these are the common ones.
FINEWEB_END_PUNCTUATION = (
    *C4_END_PUNCTUATION, "”", "。", "！", "？", "｡", "．", "؟", "۔", "।", "॥", "።", "։", "‼", "‽",
    "⁇", "⁈", "⁉",
)  # fmt: skip
C4_POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)

_WORD = re.compile(r"[^\W_](?:\S*[^\W_])?")  # a token's core: first to last letter or digit
# Han characters (CJK unified ideographs and their extensions) and kana.
CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# One Han or kana character, or a word of other letters that stops at the next one.
_CJK_WORD = re.compile(rf"[{CJK_CHARS}]|[^\W_{CJK_CHARS}](?:[^\s{CJK_CHARS}]*[^\W_{CJK_CHARS}])?")
_ONE_CJK_CHAR = re.compile(f"[{CJK_CHARS}]")
# An n-gram or line rule counts words; a Chinese word is about two characters (a
# one-character scale dropped a third of real Chinese news articles as "duplicated
# 5-grams", bench/filter_recall.py).
CJK_CHARS_PER_WORD = 2
_NO_WORD_CHAR = re.compile(r"[\W_]+")
_LETTER = re.compile(r"[^\W\d_]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")  # Wikipedia markers, as C4
# A sentence ends at . ! ? (or CJK/Arabic equivalents), maybe closed by quotes or brackets,
# before whitespace or the end of the line. "Dr. Smith" counts two: C4 used NLTK's punkt.
# Possessive, and only from the start of a run: "......x" must not cost quadratic time.
# A sentence ends at . ! ? followed by a space or the end of the line; full-width marks
# (Chinese, Japanese) end one even with the next sentence right after them.
_SENTENCE_END = re.compile(
    r"(?<![.!?。！？؟।॥۔։።])[.!?؟।॥۔։።]++[\"'”’)\]]*+(?=\s|$)|(?<![。！？])[。！？]++[”’」』）]*+"
)
# "φάρμακα.Από": a sentence end where the space after the mark was lost (pages that
# join paragraphs); counted only between a lower-case and an upper-case letter, so
# "U.S." and "3.5" stay one sentence.
_UNSPACED_END = re.compile(r"(?<=[^\W\d_])[.!?](?=[^\W\d_])")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant for the rolling n-gram hash


class DocView:
    """One document split once into the pieces every rule shares (lines, paragraphs,
    tokens, words, n-gram hashes), each computed on first use: most documents fail or
    pass long before the costly n-gram measures are needed."""

    def __init__(
        self, text: str, words: str = "whitespace", min_line_words: int | None = None
    ) -> None:
        self.text = text
        # Lines (and paragraphs) of fewer words than this are not judged by the line
        # rules: C4's line filter removes them from the text that is kept.
        self.min_line_words = min_line_words
        self.chars = max(len(text), 1)  # denominator of every character fraction
        self.cjk = words == "cjk"
        # An n-gram of n words spans CJK_CHARS_PER_WORD * n Han or kana characters.
        self.ngram_words = CJK_CHARS_PER_WORD if self.cjk else 1
        self._ngrams: dict[int, np.ndarray] = {}

    @cached_property
    def lines(self) -> list[str]:
        """Non-blank lines, stripped: indentation and blank separators are layout."""
        lines = [line for line in map(str.strip, self.text.splitlines()) if line]
        return self._long_enough(lines)

    @cached_property
    def paragraphs(self) -> list[str]:
        return self._long_enough(
            [p for p in map(str.strip, _PARAGRAPH_BREAK.split(self.text)) if p]
        )

    def _long_enough(self, items: list[str]) -> list[str]:
        if not self.min_line_words:
            return items
        return [item for item in items if line_words(item, self.cjk) >= self.min_line_words]

    @cached_property
    def token_count(self) -> int:
        """Whitespace tokens; in "cjk" mode the words plus the tokens that hold no
        letter or digit ("-", "|"), as punctuation attached to a word is not a token."""
        if self.cjk:
            symbols = sum(1 for token in self.text.split() if _NO_WORD_CHAR.fullmatch(token))
            return len(self.words) + symbols
        return len(self.text.split())

    @cached_property
    def words(self) -> list[str]:
        if self.cjk:
            return [match.group() for match in self._cjk_matches]
        return _WORD.findall(self.text)

    @cached_property
    def _cjk_matches(self) -> list[re.Match[str]]:
        return list(_CJK_WORD.finditer(self.text))

    @cached_property
    def word_chars_cumsum(self) -> np.ndarray:
        """``[0, len(w0), len(w0)+len(w1), ...]``: any n-gram's character count in O(1)."""
        lengths = np.fromiter(map(len, self.words), dtype=np.int64, count=len(self.words))
        return np.concatenate(([0], np.cumsum(lengths)))

    @cached_property
    def word_gaps(self) -> np.ndarray:
        """Characters between each word and the next. Whitespace words are joined by one
        space (datatrove's measure); in "cjk" mode the gaps are the text's own, so two
        adjacent Han characters add nothing."""
        if not self.cjk:
            return np.ones(max(len(self.words) - 1, 0), dtype=np.int64)
        matches = self._cjk_matches
        starts = np.fromiter((m.start() for m in matches[1:]), np.int64, max(len(matches) - 1, 0))
        ends = np.fromiter((m.end() for m in matches[:-1]), np.int64, max(len(matches) - 1, 0))
        return starts - ends

    @cached_property
    def word_gaps_cumsum(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.word_gaps)))

    def ngram_hashes(self, n: int) -> np.ndarray:
        """A 64-bit hash per n-gram start, built from the (n-1)-gram hashes, so all
        n = 2..10 cost one vector operation each rather than joining strings."""
        if n not in self._ngrams:
            if n == 1:
                hashes = np.fromiter(map(hash, self.words), np.int64, len(self.words))
                self._ngrams[1] = hashes.view(np.uint64)
            else:
                shorter, unigrams = self.ngram_hashes(n - 1), self.ngram_hashes(1)
                self._ngrams[n] = shorter[:-1] * _MIX + unigrams[n - 1 :]
        return self._ngrams[n]

    @cached_property
    def line_duplicates(self) -> tuple[int, int]:
        return _duplicates(self.lines)

    @cached_property
    def paragraph_duplicates(self) -> tuple[int, int]:
        return _duplicates(self.paragraphs)


_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")  # trafilatura writes a "|" inside a cell as "\\|"
_HEADER_RULE = re.compile(r"[-:\s]+")


def table_cells(line: str) -> list[str] | None:
    """The non-empty cells of a table row as trafilatura writes it (``| a | b |``),
    or None for any other line. A header rule (``|---|---|``) has no cells."""
    stripped = line.strip()
    if len(stripped) < 2 or stripped[0] != "|" or stripped[-1] != "|" or stripped[-2] == "\\":
        return None
    cells = (cell.strip().replace("\\|", "|") for cell in _CELL_SEPARATOR.split(stripped[1:-1]))
    return [cell for cell in cells if cell and not _HEADER_RULE.fullmatch(cell)]


def rule_view(text: str) -> str:
    """The text as the line rules should see it: each table row replaced by its cells,
    one per line (a row of empty cells disappears)."""
    if "|" not in text:
        return text
    out: list[str] = []
    for line in text.split("\n"):
        cells = table_cells(line)
        if cells is None:
            out.append(line)
        else:
            out.extend(cells)
    return "\n".join(out)


def line_words(line: str, cjk: bool = False) -> float:
    """Words on a line as C4 counts them: whitespace tokens; for Chinese and Japanese
    (``cjk``), the words between the Han and kana characters plus those characters at
    ``CJK_CHARS_PER_WORD`` to a word, so that C4's three-word minimum removes the same
    menus and bylines ("新华网首页") as in spaced languages."""
    if not cjk:
        return len(line.split())
    words = _CJK_WORD.findall(line)
    characters = sum(1 for word in words if _ONE_CJK_CHAR.fullmatch(word))
    return len(words) - characters + characters / CJK_CHARS_PER_WORD


def _duplicates(items: Iterable[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters (first copies free)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _fraction(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


# --- Gopher quality ----------------------------------------------------------------------
def word_count(doc: DocView, params: Params) -> float:
    return float(len(doc.words))


def mean_word_chars(doc: DocView, params: Params) -> float:
    return _fraction(int(doc.word_chars_cumsum[-1]), len(doc.words))


def hash_word_ratio(doc: DocView, params: Params) -> float:
    """'#' per word. datatrove divides by all tokens, punctuation included; we divide by
    words, which the paper's "symbol-to-word ratio" reads as."""
    return _fraction(doc.text.count("#"), len(doc.words))


def ellipsis_word_ratio(doc: DocView, params: Params) -> float:
    return _fraction(doc.text.count("...") + doc.text.count("…"), len(doc.words))


def bullet_line_fraction(doc: DocView, params: Params) -> float:
    """Over non-blank lines: datatrove counts blank lines too, so blank-separated lists
    of bullets (half their lines blank) never reach its 0.9."""
    return _fraction(sum(line.startswith(BULLETS) for line in doc.lines), len(doc.lines))


def ellipsis_line_fraction(doc: DocView, params: Params) -> float:
    return _fraction(sum(line.endswith(ELLIPSES) for line in doc.lines), len(doc.lines))


def alpha_word_fraction(doc: DocView, params: Params) -> float:
    """Tokens with a letter over all tokens: symbol-only tokens ("|", "»") count against,
    so menus and tables of numbers fail."""
    alpha = sum(map(str.isalpha, doc.words))  # the common case, at C speed
    alpha += sum(1 for word in filterfalse(str.isalpha, doc.words) if _LETTER.search(word))
    return _fraction(alpha, doc.token_count)


def stop_word_count(doc: DocView, params: Params) -> float:
    """Occurrences, case-folded (datatrove is case-sensitive: "The" does not count)."""
    return float(sum(map(STOP_WORDS.__contains__, map(str.lower, doc.words))))


# --- Gopher repetition -------------------------------------------------------------------
def dup_paragraph_fraction(doc: DocView, params: Params) -> float:
    return _fraction(doc.paragraph_duplicates[0], len(doc.paragraphs))


def dup_paragraph_char_fraction(doc: DocView, params: Params) -> float:
    return doc.paragraph_duplicates[1] / doc.chars


def dup_line_fraction(doc: DocView, params: Params) -> float:
    return _fraction(doc.line_duplicates[0], len(doc.lines))


def dup_line_char_fraction(doc: DocView, params: Params) -> float:
    return doc.line_duplicates[1] / doc.chars


def _groups(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by hash (stable, so each group starts at its first occurrence)
    and a mask of the sorted positions that begin a group: np.unique, minus its
    overhead, which dominates on documents of a few hundred words."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    starts = np.empty(ordered.size, dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return order, starts


def top_ngram_char_fraction(doc: DocView, params: Params, *, n: int) -> float:
    """Characters (words joined by single spaces) of the most frequent n-gram times its
    count. An n-gram that occurs once is not repetition, so it scores 0 (datatrove scores
    it, which drops a 3-word document as a "top 2-gram"). Ties take the longest."""
    n *= doc.ngram_words
    hashes = doc.ngram_hashes(n)
    if hashes.size < 2:
        return 0.0
    order, starts = _groups(hashes)
    group_starts = np.flatnonzero(starts)
    counts = np.diff(group_starts, append=hashes.size)
    top = int(counts.max())
    if top < 2:
        return 0.0
    firsts = order[group_starts[counts == top]]
    cumsum, gaps = doc.word_chars_cumsum, doc.word_gaps_cumsum
    spans = cumsum[firsts + n] - cumsum[firsts] + gaps[firsts + n - 1] - gaps[firsts]
    return top * int(spans.max()) / doc.chars


def dup_ngram_char_fraction(doc: DocView, params: Params, *, n: int) -> float:
    """Characters covered by n-grams that repeat an earlier one, each character counted
    once however many duplicate n-grams overlap it (Gopher's wording; datatrove
    approximates by skipping n words after each hit)."""
    n *= doc.ngram_words
    hashes = doc.ngram_hashes(n)
    if hashes.size < 2:
        return 0.0
    order, starts = _groups(hashes)
    repeats = order[~starts]
    if repeats.size == 0:
        return 0.0
    n_words = len(doc.words)
    depth = np.bincount(repeats, minlength=n_words + 1) - np.bincount(
        repeats + n, minlength=n_words + 1
    )
    covered = np.cumsum(depth[:n_words]) > 0
    lengths = np.diff(doc.word_chars_cumsum)
    inside = covered[1:] & covered[:-1]  # the gaps inside each covered run
    return (int(lengths[covered].sum()) + int(doc.word_gaps[inside].sum())) / doc.chars


# --- FineWeb -----------------------------------------------------------------------------
def line_punctuation_fraction(doc: DocView, params: Params) -> float:
    """Lines that end a sentence: at their end (FineWeb's test) or inside them. A line
    holding whole sentences is running text even when it stops mid-sentence (pages that
    break paragraphs with ``<br>``) or on an unpunctuated quote; FineWeb's test alone
    dropped such real news articles, whose every paragraph is one such line."""
    ended = sum(
        line.endswith(FINEWEB_END_PUNCTUATION) or _SENTENCE_END.search(line) is not None
        for line in doc.lines
    )
    return _fraction(ended, len(doc.lines))


def short_line_fraction(doc: DocView, params: Params) -> float:
    limit = params["short_line_max_chars"]
    return _fraction(sum(len(line) <= limit for line in doc.lines), len(doc.lines))


def newline_word_ratio(doc: DocView, params: Params) -> float:
    """Newlines per token: datatrove counts NLTK tokens (punctuation included), which
    whitespace tokens approximate better than words do."""
    return doc.text.count("\n") / max(doc.token_count, 1)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A threshold name (``min_*`` fails below, ``max_*`` fails above), the reason a
    failure records, and the measure compared with the threshold."""

    threshold: str
    reason: str
    measure: Measure


GOPHER_QUALITY_RULES = (
    RuleSpec("min_words", REASON_GOPHER_TOO_FEW_WORDS, word_count),
    RuleSpec("max_words", REASON_GOPHER_TOO_MANY_WORDS, word_count),
    RuleSpec("min_mean_word_chars", REASON_GOPHER_SHORT_MEAN_WORD, mean_word_chars),
    RuleSpec("max_mean_word_chars", REASON_GOPHER_LONG_MEAN_WORD, mean_word_chars),
    RuleSpec("max_hash_word_ratio", REASON_GOPHER_MANY_HASHES, hash_word_ratio),
    RuleSpec("max_ellipsis_word_ratio", REASON_GOPHER_MANY_ELLIPSES, ellipsis_word_ratio),
    RuleSpec("max_bullet_line_fraction", REASON_GOPHER_BULLET_LINES, bullet_line_fraction),
    RuleSpec("max_ellipsis_line_fraction", REASON_GOPHER_ELLIPSIS_LINES, ellipsis_line_fraction),
    RuleSpec("min_alpha_word_fraction", REASON_GOPHER_FEW_ALPHA_WORDS, alpha_word_fraction),
    RuleSpec("min_stop_words", REASON_GOPHER_FEW_STOP_WORDS, stop_word_count),
)
STOP_WORD_THRESHOLD = "min_stop_words"

GOPHER_REPETITION_RULES = (
    RuleSpec(
        "max_dup_paragraph_fraction", REASON_GOPHER_DUP_PARAGRAPH_FRACTION, dup_paragraph_fraction
    ),
    RuleSpec(
        "max_dup_paragraph_char_fraction",
        REASON_GOPHER_DUP_PARAGRAPH_CHAR_FRACTION,
        dup_paragraph_char_fraction,
    ),
    RuleSpec("max_dup_line_fraction", REASON_GOPHER_DUP_LINE_FRACTION, dup_line_fraction),
    RuleSpec(
        "max_dup_line_char_fraction", REASON_GOPHER_DUP_LINE_CHAR_FRACTION, dup_line_char_fraction
    ),
    *(
        RuleSpec(
            f"max_top_{n}gram_char_fraction",
            REASON_GOPHER_TOP_NGRAM[n],
            partial(top_ngram_char_fraction, n=n),
        )
        for n in TOP_NGRAM_SIZES
    ),
    *(
        RuleSpec(
            f"max_dup_{n}gram_char_fraction",
            REASON_GOPHER_DUP_NGRAM[n],
            partial(dup_ngram_char_fraction, n=n),
        )
        for n in DUP_NGRAM_SIZES
    ),
)

FINEWEB_RULES = (
    RuleSpec(
        "min_line_punctuation_fraction",
        REASON_FINEWEB_LOW_LINE_PUNCTUATION,
        line_punctuation_fraction,
    ),
    RuleSpec("max_short_line_fraction", REASON_FINEWEB_SHORT_LINES, short_line_fraction),
    RuleSpec("max_dup_line_char_fraction", REASON_FINEWEB_DUP_LINE_CHARS, dup_line_char_fraction),
    RuleSpec("max_newline_word_ratio", REASON_FINEWEB_LIST_LIKE, newline_word_ratio),
)


# --- C4: a line filter that rewrites the text, then three document rules ----------------
def c4_clean(text: str, params: Params, cjk: bool = False) -> tuple[str, str | None, float | None]:
    """Keep the lines C4 keeps and join them; or name why the whole page goes.

    Returns ``(kept_text, reason, score)``. Checks run per stripped line in TFDS's
    order, so "lorem ipsum" or "{" on a line already removed (say, one without terminal
    punctuation) does not reject the page: that is C4's behaviour, kept on purpose.
    A table row is judged cell by cell, each cell as a line (``rule_view``), and kept
    whole, as it was written, when any of its cells is kept. ``cjk`` counts a line's
    words as ``line_words`` does for Chinese and Japanese.
    """
    kept: list[str] = []
    sentences = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if params["keep_blank_lines"] and kept and kept[-1]:
                kept.append("")
            continue
        cells = table_cells(line) if params.get("table_cells", True) else None
        verdicts = [_c4_line(piece, params, cjk) for piece in ([line] if cells is None else cells)]
        for verdict in verdicts:
            if isinstance(verdict, tuple):  # the whole page goes
                return text, *verdict
        survivors = [v for v in verdicts if v is not None]
        if survivors:
            sentences += sum(map(sentence_count, survivors))
            kept.append(survivors[0] if cells is None else line)
    if params["min_sentences"] is not None and sentences < params["min_sentences"]:
        return text, REASON_C4_TOO_FEW_SENTENCES, float(sentences)
    cleaned = "\n".join(kept).strip()
    if not cleaned:
        return text, REASON_C4_NO_LINES_LEFT, 0.0
    return cleaned, None, None


def sentence_count(line: str) -> int:
    """Sentences on one line, at least one (C4 used NLTK's punkt)."""
    count = len(_SENTENCE_END.findall(line))
    for match in _UNSPACED_END.finditer(line):
        start = match.start()
        if line[start - 1].islower() and line[start + 1].isupper():
            count += 1
    return max(1, count)


def _c4_line(line: str, params: Params, cjk: bool = False) -> str | tuple[str, float] | None:
    """One stripped line under C4's line rules: the line to keep (citations removed),
    None to drop it, or ``(reason, score)`` when it rejects the whole page."""
    max_word_chars = params["max_word_chars"]
    min_line_words = params["min_line_words"]
    words = line.split()
    if (
        max_word_chars is not None
        and len(line) > max_word_chars  # a shorter line cannot hold a longer word
        and max(map(len, words)) > max_word_chars
    ):
        return None
    if params["remove_citations"]:
        line = _CITATION.sub("", line)
    if params["require_terminal_punctuation"] and (
        not line.endswith(FINEWEB_END_PUNCTUATION) or line.endswith("...")
    ):
        return None
    if (
        min_line_words is not None
        and (len(words) if not cjk else line_words(line, cjk=True)) < min_line_words
    ):
        return None
    lowered = line.lower()
    if params["reject_lorem_ipsum"] and "lorem ipsum" in lowered:
        return REASON_C4_LOREM_IPSUM, 1.0
    if params["remove_javascript_lines"] and "javascript" in lowered:
        return None
    if params["reject_curly_bracket"] and "{" in line:
        return REASON_C4_CURLY_BRACKET, 1.0
    if params["remove_policy_lines"] and any(p in lowered for p in C4_POLICY_PHRASES):
        return None
    return line
