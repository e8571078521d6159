"""The fluency stage and its character n-gram model on hand-written text: each reason,
the perplexity ordering, the saved model, code rows and the edge cases."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from pydantic import ValidationError

from stages.base import DROP_REASON, DROP_SCORE
from stages.fluency import (
    FLUENCY_PERPLEXITY,
    REASON_ENDS_MID_SENTENCE,
    REASON_FEW_SENTENCES,
    REASON_HIGH_PERPLEXITY,
    REASON_NOT_PROSE,
    Fluency,
    FluencyConfig,
    count_sentences,
    ends_sentence,
    letter_fraction,
)
from stages.ngram_lm import PAD, CharNgramLM

REFERENCE = [
    "The river rises in the hills and flows slowly towards the sea. Along its banks the "
    "farmers grow wheat and barley, and in the spring the water is high and cold. "
    "Children learn to swim in the shallow bend below the old mill, where the current is "
    "weak and the bottom is sandy. In the autumn the leaves fall into the water and are "
    "carried down to the harbour, where the fishing boats wait for the tide.",
    "A good library lends books to everyone who lives in the town. The librarians help "
    "readers find what they are looking for, and they order new books every month. On "
    "rainy afternoons the reading room is full of students who prepare for their exams, "
    "and in the evening the lights stay on until the last reader has gone home.",
] * 3
FLUENT = (
    "The farmers in the town grow wheat along the river. In the spring the children "
    "read in the library. The boats wait in the harbour for the evening tide."
)
SALAD = (
    "Cheap watches buy online cheap flights casino bonus win free followers. Replica "
    "handbags discount sneakers crypto signals best price. Order now click here top deals."
)
SOUP = "%%% ♦♦♦ @@@ !!! … >>> ★★★ ||| ### ~~~ €€€ $$$. " * 4


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lm") / "fluency_lm.npz"
    CharNgramLM.fit(REFERENCE, order=4).save(path)
    return str(path)


def run(texts, formats=None, language_column=None, **cfg) -> pa.Table:
    columns = {"text": pa.array(texts, pa.string())}
    if formats is not None:
        columns["format"] = pa.array(formats, pa.string())
    if language_column is not None:
        columns["language"] = pa.array(language_column, pa.string())
    return Fluency(FluencyConfig(**cfg))(pa.table(columns))


def test_kneser_ney_is_a_distribution_and_orders_fluency() -> None:
    lm = CharNgramLM.fit(REFERENCE, order=4)
    for history in (PAD * 3, "the", " ri", "zzq"):  # seen, seen, seen, unseen context
        total = sum(lm._prob(history, char) for char in lm.vocabulary)
        unknown = lm._prob(history, "☃")  # a character the model never saw
        assert 0.0 < unknown < 0.01 and total + unknown == pytest.approx(1.0)
    fluent, salad, soup = (lm.perplexity(t) for t in (FLUENT, SALAD, SOUP))
    assert fluent < salad < soup
    assert lm.perplexity("") is None and lm.perplexity("   \n") is None


def test_saved_model_round_trips(lm_path: str) -> None:
    original = CharNgramLM.fit(REFERENCE, order=4)
    loaded = CharNgramLM.load(lm_path)
    assert loaded.order == 4 and loaded.counts == original.counts
    assert loaded.perplexity(SALAD) == pytest.approx(original.perplexity(SALAD))
    with pytest.raises(ValueError, match="empty text"):
        CharNgramLM.fit([], order=3)


def test_each_reason_with_its_score(lm_path: str) -> None:
    texts = [
        FLUENT,
        "Only one sentence here.",
        FLUENT + " And then the boats",
        "| 12 | 13 | 14 |\n| 15 | 16 | 17 |\n| 18 | 19 | 20 |. A b. C d. E f.",
        SALAD,
    ]
    out = run(texts, lm_path=lm_path, max_perplexity=12.0)
    assert out.column(DROP_REASON).to_pylist() == [
        None,
        REASON_FEW_SENTENCES,
        REASON_ENDS_MID_SENTENCE,
        REASON_NOT_PROSE,
        REASON_HIGH_PERPLEXITY,
    ]
    scores = out.column(DROP_SCORE).to_pylist()
    assert scores[1] == 1.0 and scores[2] is None and scores[3] < 0.5 and scores[4] > 12.0
    perplexity = out.column(FLUENCY_PERPLEXITY).to_pylist()
    assert perplexity[0] < 12.0 < perplexity[4]


def test_edge_cases_empty_one_line_missing_text() -> None:
    out = run(["", None, "A single line without an end", "One line. Two lines! Three?"])
    assert out.column(DROP_REASON).to_pylist() == [
        REASON_FEW_SENTENCES,  # nothing visible: no letter share to judge, no sentences
        REASON_FEW_SENTENCES,
        REASON_FEW_SENTENCES,
        None,
    ]
    assert out.column(DROP_SCORE).to_pylist()[0] == 0.0
    assert out.column(FLUENCY_PERPLEXITY).null_count == 4  # no model: no perplexity


def test_thresholds_none_switch_rules_off(lm_path: str) -> None:
    off = {"min_sentences": None, "require_sentence_end": False, "min_letter_fraction": None}
    out = run(["", "x", "12 34 56", SALAD], lm_path=lm_path, max_perplexity=None, **off)
    assert out.column(DROP_REASON).null_count == 4
    assert out.column(FLUENCY_PERPLEXITY).to_pylist()[3] > 0


def test_code_passes_and_languages_limit_the_model(lm_path: str) -> None:
    out = run(
        [SALAD, SALAD, SALAD, "x = 1\ny = 2"],
        formats=["text", "html", "text", "code"],
        language_column=["en", "de", None, None],
        lm_path=lm_path,
        max_perplexity=12.0,
        languages=["en"],
    )
    perplexity = out.column(FLUENCY_PERPLEXITY).to_pylist()
    reasons = out.column(DROP_REASON).to_pylist()
    assert perplexity[0] > 12.0 and reasons[0] == REASON_HIGH_PERPLEXITY
    assert perplexity[1] is None and reasons[1] is None  # German: the LM knows English only
    assert reasons[2] == REASON_HIGH_PERPLEXITY  # a null language is scored
    assert perplexity[3] is None and reasons[3] is None  # code passes untouched


def test_sentence_and_prose_measures() -> None:
    # "Dr." counts too: abbreviations inflate the count, which a minimum can afford.
    assert count_sentences("Dr. Smith arrived. He sat down! Was it late? Yes.") == 5
    assert count_sentences("See e.g. the notes... Then stop.") == 2  # "..." ends nothing
    assert count_sentences("第一句。第二句！第三句？") == 3  # CJK stops need no space
    assert count_sentences("1. 2. 3.") == 0  # single digits are list numbers, not sentences
    assert ends_sentence('He said "stop."') and ends_sentence("(The end.)")
    assert not ends_sentence("Read more...") and not ends_sentence("Read more…")
    assert not ends_sentence("and the process can stop once")
    assert letter_fraction("") is None and letter_fraction("ab12") == 0.5
    assert math.isclose(letter_fraction("Ünïcödé"), 1.0)


def test_config_validation(tmp_path) -> None:
    with pytest.raises(ValidationError):
        FluencyConfig(max_perplexity=0.5)  # a perplexity is at least 1
    with pytest.raises(ValidationError):
        FluencyConfig(min_words=3)  # unknown key
    assert FluencyConfig().resolve_paths(tmp_path) == FluencyConfig()  # no model named
    with pytest.raises(ValueError, match="lm_path: file not found"):
        FluencyConfig(lm_path="lm.npz").resolve_paths(tmp_path)
