"""The domain tagger on hand-written documents: each tag, its score, the features that
must not fire (prices, underlines), edge cases, and that it never rejects."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from stages.base import DROP_REASON
from stages.domain import (
    DOMAIN,
    DOMAIN_SCORE,
    DOMAINS,
    STEM_TERMS_PATH,
    Domain,
    DomainConfig,
    is_term,
    load_terms,
    stem_evidence,
    tag_document,
    words_of,
)

MATH_PROSE = (
    "A prime number is an integer greater than one whose only divisors are one and itself. "
    "Every integer has a unique factorization into primes. The proof is by induction, and a "
    "corollary is that the set of primes is infinite. The theorem is older than calculus."
)
LATEX = r"Let $f$ be continuous. Then \int_0^1 f(x)\,dx = F(1) - F(0) by \cite{Spivak}."
NEWS = (
    "The town council met on Tuesday evening to discuss the new bus timetable. Several "
    "residents asked for a later service on weekends, and the mayor promised an answer "
    "before the summer holidays begin. The meeting ended shortly after nine o'clock."
)
NOVEL = (
    "It was late when Anna came home. The kitchen was dark, and her brother had left a note "
    "on the table saying that he would be back before morning. She read it twice. "
)
CODE = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def terms() -> frozenset[str]:
    return load_terms(STEM_TERMS_PATH)


def test_each_tag(terms: frozenset[str]) -> None:
    cfg = DomainConfig(min_book_chars=5_000)
    assert tag_document(CODE, "code", terms, cfg) == ("code", 1.0)
    for text in (MATH_PROSE, LATEX):
        domain, score = tag_document(text, "text", terms, cfg)
        assert domain == "stem" and score >= cfg.min_stem_score
    domain, score = tag_document(NEWS, "html", terms, cfg)
    assert domain == "web" and score > 0.8  # confident it is not STEM
    assert tag_document(NOVEL * 40, "text", terms, cfg)[0] == "books"  # ~7,500 chars of prose
    assert tag_document(LATEX * 100, "text", terms, cfg)[0] == "stem"  # long STEM stays STEM
    assert {tag_document(t, "text", terms, cfg)[0] for t in (NEWS, NOVEL * 40)} < set(DOMAINS)


def test_edge_cases_empty_one_line_and_null(terms: frozenset[str]) -> None:
    cfg = DomainConfig()
    assert tag_document("", "text", terms, cfg) == ("web", 1.0)
    assert tag_document(None, None, terms, cfg) == ("web", 1.0)
    assert tag_document("   \n\n  ", "html", terms, cfg) == ("web", 1.0)
    assert tag_document("x = y^2 + 3", "text", terms, cfg)[0] == "stem"  # one line of maths
    assert tag_document("Opening hours are nine to five.", "text", terms, cfg)[0] == "web"
    assert tag_document("", "code", terms, cfg) == ("code", 1.0)  # an empty source file


def test_prices_dates_and_underlines_are_not_maths(terms: frozenset[str]) -> None:
    cfg = DomainConfig()
    deals = "Switch Lite for $199.99, AirPods for $ 150 and a case for $20 until 2024-12-01."
    rst = "Series\n======\n\nLimits\n------\n\nSee below.\n^^^^^^^^\n"
    for text in (deals, rst):
        evidence = stem_evidence(text, terms, cfg)
        assert evidence["latex"] == 0.0 and evidence["math"] == 0.0, text
    assert stem_evidence("a + b = c and x^2 <= y", terms, cfg)["math"] > 0


def test_identifiers_split_and_markup_is_not_text() -> None:
    assert words_of("TensorIndexType riemann_cyclic HTTPServer") == [
        "tensor", "index", "type", "riemann", "cyclic", "http", "server",
    ]  # fmt: skip
    rst = ".. autoclass:: LinearOperator\n   :members:\n   :maxdepth: 2\n\nA matrix."
    assert words_of(rst) == ["linear", "operator", "a", "matrix"]


def test_plurals_match_their_singular() -> None:
    terms = frozenset({"theorem", "matrix", "matrices", "probability", "gas"})
    for word in ("theorem", "theorems", "matrices", "probabilities", "gases"):
        assert is_term(word, terms), word
    for word in ("theory", "theoretical", "s", "series", "gasses"):
        assert not is_term(word, terms), word


def test_angle_bracket_titles_and_shell_prompts_are_not_maths(terms: frozenset[str]) -> None:
    cfg = DomainConfig()
    quoted = "MBC는 <숨바꼭질>로, SBS는 <그녀로 말할 것 같으면>으로 맞선다. #include <stdio.h>"
    assert stem_evidence(quoted, terms, cfg)["math"] == 0.0
    assert stem_evidence("if a < b and c > d then x<2", terms, cfg)["math"] > 0
    shell = "Install it:\n\n    $ pip install evolve\n$ hg push --rev tip\n"
    assert stem_evidence(shell, terms, cfg)["latex"] == 0.0  # prompts, not inline maths
    assert stem_evidence("Let $x$ be real.", terms, cfg)["latex"] > 0


def test_stage_adds_columns_and_never_rejects() -> None:
    table = pa.table(
        {
            "text": [MATH_PROSE, NEWS, CODE, None, ""],
            "format": ["text", "html", "code", "html", "text"],
        }
    )
    out = Domain(DomainConfig())(table)
    assert out.column(DOMAIN).to_pylist() == ["stem", "web", "code", "web", "web"]
    scores = out.column(DOMAIN_SCORE).to_pylist()
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[2] == 1.0
    assert out.column(DROP_REASON).null_count == table.num_rows
    no_columns = Domain(DomainConfig())(pa.table({"id": ["a"]}))  # no text, no format
    assert no_columns.column(DOMAIN).to_pylist() == ["web"]


def test_custom_vocabulary_and_config(tmp_path) -> None:
    vocabulary = tmp_path / "terms.txt"
    vocabulary.write_text("# bus words\ntimetable\nbus\nservice\n")
    stage = Domain(DomainConfig(stem_terms_path=str(vocabulary), stem_terms_share=0.02))
    out = stage(pa.table({"text": [NEWS], "format": ["html"]}))
    assert out.column(DOMAIN).to_pylist() == ["stem"]  # by this odd vocabulary, buses are STEM
    with pytest.raises(ValidationError):
        DomainConfig(min_stem_score=2.0)
    with pytest.raises(ValidationError):
        DomainConfig(books_min_chars=10)  # unknown key
    assert DomainConfig(min_book_chars=None).min_book_chars is None
