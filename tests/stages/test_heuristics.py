"""Heuristics stage: every rule's reason string on a document built to trip it, the
clean article that passes all presets, overrides, switching rules off, config errors,
code pass-through and row order."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from stages import heuristic_rules as hr
from stages.base import DOCUMENT_SCHEMA
from stages.heuristics import PRESETS, Heuristics, HeuristicsConfig

TITLE = "The Quiet Return of the River Otter"
PARAGRAPHS = [
    "For most of the twentieth century, the river otter was absent from the streams of the "
    "northern valley. Trapping, drainage and industrial waste had pushed the animals out, and "
    "by 1960 biologists considered the local population lost.",
    "That began to change when a regional water authority rebuilt its treatment plants in the "
    "late 1980s. Cleaner water brought back the small fish and crayfish that otters eat, and "
    "volunteers started planting willows along eroded banks to give them cover.",
    "The first confirmed sighting came in 1994, when a farmer photographed a female with two "
    "cubs near an old mill. Surveys since then have found tracks, droppings and dens on almost "
    "every tributary, although numbers remain modest.",
    "Researchers caution that recovery is fragile. Road traffic kills dozens of otters each "
    "year, and a single chemical spill could undo decades of work. Several councils have "
    "therefore built tunnels under busy roads where animals were often struck.",
    "Still, the return of a predator at the top of the freshwater food chain is a useful sign. "
    "It suggests that patient investment in habitat can pay off, even where damage once seemed "
    "permanent, and it gives local schools a living example to study.",
]
ARTICLE = TITLE + "\n\n" + "\n\n".join(PARAGRAPHS)
ONE_LINE_PROSE = " ".join(PARAGRAPHS[:2])  # 80 words of clean prose on one line


def batch_of(texts, formats=None, languages=None, ids=None) -> pa.Table:
    """A batch shaped like a reader's output (DOCUMENT_SCHEMA), plus optional languages."""
    n = len(texts)
    columns = {field.name: pa.nulls(n, field.type) for field in DOCUMENT_SCHEMA}
    columns["id"] = pa.array(ids or [f"doc{i}" for i in range(n)], pa.string())
    columns["text"] = pa.array(texts, pa.string())
    columns["format"] = pa.array(formats or ["text"] * n, pa.string())
    table = pa.table(columns, schema=DOCUMENT_SCHEMA)
    if languages is not None:
        table = table.append_column("language", pa.array(languages, pa.string()))
    return table


def judge(text: str, presets=None, overrides=None, **config) -> tuple[str | None, float | None]:
    cfg = HeuristicsConfig(presets=presets or list(PRESETS), overrides=overrides or {}, **config)
    out = Heuristics(cfg)(batch_of([text]))
    return out.column("drop_reason")[0].as_py(), out.column("drop_score")[0].as_py()


def lines(*items: str) -> str:
    return "\n".join(items)


def unique_words(count: int, start: int = 0) -> list[str]:
    """Distinct 8-character words ("wordaaaa", "wordaaab", ...) that never repeat."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = []
    for i in range(start, start + count):
        a, b, c, d = i // 17576 % 26, i // 676 % 26, i // 26 % 26, i % 26
        words.append("word" + letters[a] + letters[b] + letters[c] + letters[d])
    return words


def repeated_run_doc(fraction: float) -> str:
    """Ten words said twice, padded with unique words so that the second copy covers
    about ``fraction`` of the characters: every duplicate n-gram measure (n = 5..10)
    then reads ``fraction`` while the top 2/3/4-gram measures stay under their limits."""
    run = " ".join(unique_words(10, start=50_000))
    total = round(len(run) / fraction)
    filler_words = (total - 2 * len(run) - 3) // 9
    filler = unique_words(filler_words)
    half = filler_words // 2
    return " ".join([run, *filler[:half], run, *filler[half:]])


def top_ngram_doc(n: int, filler_chars: int, units: int = 12) -> str:
    """A repeated n-gram of 4-letter words, each copy followed by unique filler."""
    gram = " ".join(["aaaa", "bbbb", "cccc", "dddd"][:n])
    filler = iter(unique_words(units * (filler_chars // 9 + 1)))
    parts = []
    for _ in range(units):
        parts.append(gram)
        parts.extend(next(filler) for _ in range(filler_chars // 9))
    return " ".join(parts)


LONG_BULLET = "• Fresh apples and pears from the local market stall"
BASE = ONE_LINE_PROSE

# (preset, text, reason under the published thresholds, reason once that rule is None)
CASES = [
    # --- Gopher quality
    (
        "gopher_quality",
        "The quick brown foxes jumped over the lazy sleeping dogs with great enthusiasm.",
        hr.REASON_GOPHER_TOO_FEW_WORDS,
        None,
    ),
    ("gopher_quality", (BASE + " ") * 1300, hr.REASON_GOPHER_TOO_MANY_WORDS, None),
    (
        "gopher_quality",
        "to be or not to be is the way of it and so on as we go " * 5,
        hr.REASON_GOPHER_SHORT_MEAN_WORD,
        None,
    ),
    (
        "gopher_quality",
        "the internationalization and characteristically extraordinary incomprehensibilities " * 12,
        hr.REASON_GOPHER_LONG_MEAN_WORD,
        None,
    ),
    (
        "gopher_quality",
        BASE + " " + " ".join(f"#summer{i}" for i in range(15)),
        hr.REASON_GOPHER_MANY_HASHES,
        None,
    ),
    (
        "gopher_quality",
        BASE + " and then... " * 12 + "the end.",
        hr.REASON_GOPHER_MANY_ELLIPSES,
        None,
    ),
    ("gopher_quality", lines(*[LONG_BULLET] * 10), hr.REASON_GOPHER_BULLET_LINES, None),
    (
        "gopher_quality",
        lines(*[BASE[:120] + "..."] * 4, *[BASE[:120] + "."] * 6),
        hr.REASON_GOPHER_ELLIPSIS_LINES,
        None,
    ),
    (
        "gopher_quality",
        BASE + " " + " ".join(str(1000 + i) for i in range(40)),
        hr.REASON_GOPHER_FEW_ALPHA_WORDS,
        None,
    ),
    (
        "gopher_quality",
        "Bright orange lanterns illuminate quiet village streets during autumn evenings. " * 8,
        hr.REASON_GOPHER_FEW_STOP_WORDS,
        None,
    ),
    # --- Gopher repetition
    (
        "gopher_repetition",
        lines(*PARAGRAPHS) + "\n\nRead more.\n\nRead more.\n\nRead more.",
        hr.REASON_GOPHER_DUP_PARAGRAPH_FRACTION,
        None,
    ),
    (
        "gopher_repetition",
        "\n\n".join([ONE_LINE_PROSE, *PARAGRAPHS[2:], ONE_LINE_PROSE]),
        hr.REASON_GOPHER_DUP_PARAGRAPH_CHAR_FRACTION,
        hr.REASON_GOPHER_DUP_LINE_CHAR_FRACTION,
    ),
    (
        "gopher_repetition",
        lines(*PARAGRAPHS, *["Share this."] * 4),
        hr.REASON_GOPHER_DUP_LINE_FRACTION,
        None,
    ),
    (
        "gopher_repetition",
        lines(PARAGRAPHS[0], *PARAGRAPHS, PARAGRAPHS[0]),
        hr.REASON_GOPHER_DUP_LINE_CHAR_FRACTION,
        hr.REASON_GOPHER_DUP_NGRAM[5],
    ),
    ("gopher_repetition", top_ngram_doc(2, 20), hr.REASON_GOPHER_TOP_NGRAM[2], None),
    ("gopher_repetition", top_ngram_doc(3, 40), hr.REASON_GOPHER_TOP_NGRAM[3], None),
    ("gopher_repetition", top_ngram_doc(4, 80), hr.REASON_GOPHER_TOP_NGRAM[4], None),
    *(
        ("gopher_repetition", repeated_run_doc(fraction), hr.REASON_GOPHER_DUP_NGRAM[n], off)
        for n, fraction, off in [
            (5, 0.17, hr.REASON_GOPHER_DUP_NGRAM[6]),
            (6, 0.145, hr.REASON_GOPHER_DUP_NGRAM[7]),
            (7, 0.135, hr.REASON_GOPHER_DUP_NGRAM[8]),
            (8, 0.125, hr.REASON_GOPHER_DUP_NGRAM[9]),
            (9, 0.115, hr.REASON_GOPHER_DUP_NGRAM[10]),
            (10, 0.105, None),
        ]
    ),
    # --- C4 (whole-document rules; line removal is tested below)
    (
        "c4",
        ARTICLE + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
        hr.REASON_C4_LOREM_IPSUM,
        None,
    ),
    (
        "c4",
        ARTICLE + "\nCall it like this { return 1; } from your own code.",
        hr.REASON_C4_CURLY_BRACKET,
        None,
    ),
    ("c4", "The river is clean again. Otters came back.", hr.REASON_C4_TOO_FEW_SENTENCES, None),
    # --- FineWeb
    (
        "fineweb",
        lines(*[f"Chapter {i} of the long river survey and its results" for i in range(10)]),
        hr.REASON_FINEWEB_LOW_LINE_PUNCTUATION,
        None,
    ),
    (
        "fineweb",
        lines(*[f"Otters seen on day {i}." for i in range(10)]),
        hr.REASON_FINEWEB_SHORT_LINES,
        None,
    ),
    ("fineweb", lines(*PARAGRAPHS, PARAGRAPHS[4]), hr.REASON_FINEWEB_DUP_LINE_CHARS, None),
    (
        "fineweb",
        lines(*[f"Internationalization considerations{i}." for i in range(10)]),
        hr.REASON_FINEWEB_LIST_LIKE,
        None,
    ),
]
RULE_NAMES = {
    spec.reason: spec.threshold
    for spec in (*hr.GOPHER_QUALITY_RULES, *hr.GOPHER_REPETITION_RULES, *hr.FINEWEB_RULES)
}
RULE_NAMES.update(
    {
        hr.REASON_C4_LOREM_IPSUM: "reject_lorem_ipsum",
        hr.REASON_C4_CURLY_BRACKET: "reject_curly_bracket",
        hr.REASON_C4_TOO_FEW_SENTENCES: "min_sentences",
    }
)


# Rules of the published presets that are off by default here (see PRESETS["c4"]).
SWITCHED_ON = {hr.REASON_C4_CURLY_BRACKET: {"c4": {"reject_curly_bracket": True}}}


@pytest.mark.parametrize(("preset", "text", "reason", "reason_when_off"), CASES)
def test_each_rule_trips_on_its_document(preset, text, reason, reason_when_off):
    assert judge(text, [preset], SWITCHED_ON.get(reason))[0] == reason
    rule_off = {preset: {RULE_NAMES[reason]: None}}
    assert judge(text, [preset], rule_off)[0] == reason_when_off


def test_curly_bracket_rule_is_off_by_default():
    code_prose = ARTICLE + "\nCall it like this { return 1; } from your own code."
    assert judge(code_prose, ["c4"])[0] is None


def test_every_reason_has_a_case():
    tested = {case[2] for case in CASES}
    assert set(RULE_NAMES) <= tested


def test_clean_article_passes_every_preset_and_keeps_its_title():
    out = Heuristics(HeuristicsConfig())(batch_of([ARTICLE]))
    assert out.column("drop_reason").to_pylist() == [None]
    assert out.column("drop_score").to_pylist() == [None]
    # C4 as FineWeb ran it keeps unpunctuated lines (the title), joined by single newlines.
    assert out.column("text")[0].as_py() == "\n".join([TITLE, *PARAGRAPHS])


def test_c4_as_published_drops_the_unpunctuated_title():
    cfg = HeuristicsConfig(overrides={"c4": {"require_terminal_punctuation": True}})
    out = Heuristics(cfg)(batch_of([ARTICLE]))
    assert out.column("text")[0].as_py() == "\n".join(PARAGRAPHS)


def test_failing_value_is_the_drop_score():
    assert judge("Only five words are here.", ["gopher_quality"]) == (
        hr.REASON_GOPHER_TOO_FEW_WORDS,
        5.0,
    )
    reason, score = judge(lines(*PARAGRAPHS, *["Share this."] * 4), ["gopher_repetition"])
    assert reason == hr.REASON_GOPHER_DUP_LINE_FRACTION
    assert score == pytest.approx(3 / 9)


def test_overrides_change_thresholds():
    assert judge(ARTICLE, overrides={"gopher_quality": {"min_words": 1000}}) == (
        hr.REASON_GOPHER_TOO_FEW_WORDS,
        float(len(ARTICLE.split())),
    )
    short = "The river is clean again. Otters came back."
    assert judge(short, ["c4"], {"c4": {"min_sentences": 2}}) == (None, None)


def test_c4_removes_lines_and_keeps_the_rest():
    text = lines(
        TITLE,
        *PARAGRAPHS[:3],
        "Please enable JavaScript to view the comments on this page.",
        "This site uses cookies to give you a better experience.",
        "Too short.",
        "A table cell " + "x" * 1001 + " ends here.",
        "The bridge over the river was finished in 1820.[3]",
        "Sightings were rare and often doubted by experts...",
    )
    cfg = HeuristicsConfig(presets=["c4"], overrides={"c4": {"require_terminal_punctuation": True}})
    out = Heuristics(cfg)(batch_of([text]))
    assert out.column("drop_reason")[0].as_py() is None
    expected = lines(*PARAGRAPHS[:3], "The bridge over the river was finished in 1820.")
    assert out.column("text")[0].as_py() == expected


def test_c4_fineweb_setting_and_blank_lines():
    fineweb_like = {"c4": {"require_terminal_punctuation": False, "keep_blank_lines": True}}
    cfg = HeuristicsConfig(presets=["c4"], overrides=fineweb_like)
    out = Heuristics(cfg)(batch_of([ARTICLE]))
    assert out.column("text")[0].as_py() == ARTICLE


def test_c4_no_lines_left_when_sentence_rule_is_off():
    published = {"min_sentences": None, "require_terminal_punctuation": True}
    assert judge(TITLE, ["c4"], {"c4": published}) == (
        hr.REASON_C4_NO_LINES_LEFT,
        0.0,
    )


def test_stop_word_rule_only_for_listed_languages():
    text = "Bright orange lanterns illuminate quiet village streets during autumn evenings. " * 8
    cfg = HeuristicsConfig(presets=["gopher_quality"])
    out = Heuristics(cfg)(batch_of([text] * 3, languages=["de", "en", None]))
    few = hr.REASON_GOPHER_FEW_STOP_WORDS
    assert out.column("drop_reason").to_pylist() == [None, few, few]
    everywhere = HeuristicsConfig(presets=["gopher_quality"], stop_word_languages=None)
    out = Heuristics(everywhere)(batch_of([text], languages=["de"]))
    assert out.column("drop_reason").to_pylist() == [few]


def test_code_passes_untouched_and_rows_keep_their_order():
    code = "def f(x):\n    return {x: 1}\n"
    texts = [ARTICLE, code, "Too short.", code, ARTICLE]
    formats = ["html", "code", "text", "code", None]
    ids = ["a", "b", "c", "d", "e"]
    batch = batch_of(texts, formats=formats, ids=ids)
    out = Heuristics(HeuristicsConfig())(batch)
    assert out.num_rows == 5
    assert out.column_names == batch.column_names  # text and reasons replaced in place
    assert out.column("id").to_pylist() == ids
    assert out.column("drop_reason").to_pylist() == [
        None,
        None,
        hr.REASON_GOPHER_TOO_FEW_WORDS,
        None,
        None,
    ]
    kept_article = "\n".join([TITLE, *PARAGRAPHS])
    assert out.column("text").to_pylist() == [kept_article, code, "Too short.", code, kept_article]


def test_text_column_type_is_kept_when_rewritten():
    batch = pa.table({"text": pa.array([ARTICLE], pa.large_string())})
    out = Heuristics(HeuristicsConfig())(batch)
    assert out.schema.field("text").type == pa.large_string()
    assert out.column("drop_reason").to_pylist() == [None]


def test_empty_and_null_text_fail_on_word_count():
    out = Heuristics(HeuristicsConfig())(batch_of(["", None]))
    assert out.column("drop_reason").to_pylist() == [hr.REASON_GOPHER_TOO_FEW_WORDS] * 2


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValidationError, match="known presets: c4, fineweb, gopher_quality"):
        HeuristicsConfig(presets=["gopher_quality", "refinedweb"])


def test_unknown_rule_names_preset_and_known_rules():
    with pytest.raises(ValidationError, match=r"'fineweb'.*known rules: max_dup_line_char"):
        HeuristicsConfig(overrides={"fineweb": {"max_line_punctuation_fraction": 0.2}})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gopher_repetition": {"max_dup_line_fraction": 0.5}}, "not in presets"),
        ({"c4": {"reject_curly_bracket": 1}}, "must be true/false"),
        ({"fineweb": {"max_short_line_fraction": True}}, "must be a number"),
        ({"fineweb": {"short_line_max_chars": None}}, "cannot be None"),
        ({"gopher_quality": {"min_words": -1}}, "must not be negative"),
    ],
)
def test_bad_overrides_are_validation_errors(overrides, message):
    presets = ["gopher_quality", "c4", "fineweb"]
    with pytest.raises(ValidationError, match=message):
        HeuristicsConfig(presets=presets, overrides=overrides)


def test_duplicate_preset_is_an_error():
    with pytest.raises(ValidationError, match="twice"):
        HeuristicsConfig(presets=["c4", "c4"])


def test_ngram_measures_count_overlaps_once():
    words = "alpha beta gamma delta epsilon"
    doc = hr.DocView(" ".join([words] * 3))  # the 2nd and 3rd copies are duplicates
    covered = len(doc.text) - len(words) - 1
    assert hr.dup_ngram_char_fraction(doc, {}, n=5) == pytest.approx(covered / len(doc.text))
    # Every 2-gram inside the run occurs 3 times; the tie goes to the longest, "delta epsilon".
    assert hr.top_ngram_char_fraction(doc, {}, n=2) == pytest.approx(3 * 13 / len(doc.text))
    once = hr.DocView("one two three four five six seven")
    assert hr.top_ngram_char_fraction(once, {}, n=2) == 0.0


CHINESE = (
    "去年春天，我决定把每天的通勤方式从开车改成骑自行车。从家到公司大约八公里，开车在早高峰常常要花四十分钟。"
    "一年下来，这个决定带来的变化比我想象的要多。\n\n"
    "最明显的变化是身体状况。刚开始的几周，我每天到公司都觉得腿很酸，但一个月之后就慢慢适应了。"
    "现在我的体重比去年减轻了五公斤，晚上也睡得更好。\n\n"
    "骑车也让我重新认识了这座城市。坐在车里的时候，我只关心前面的红绿灯。骑车时却能注意到路边新开的面包店。"
)


def test_unspaced_language_is_judged_without_whitespace_word_rules():
    stage = Heuristics(HeuristicsConfig())
    rows = pa.table(
        {"text": [CHINESE, CHINESE], "format": ["html", "html"], "language": ["zh", "en"]}
    )
    reasons = stage(rows).column("drop_reason").to_pylist()
    assert reasons[0] is None
    assert reasons[1] == "gopher_too_few_words"  # English thresholds count clauses as words
    strict = Heuristics(HeuristicsConfig(language_overrides={}))
    assert strict(rows).column("drop_reason").to_pylist()[0] is not None


def test_language_override_with_unknown_rule_is_a_validation_error():
    with pytest.raises(ValidationError, match=r"language_overrides\['zh'\]"):
        HeuristicsConfig(language_overrides={"zh": {"c4": {"min_wordz": None}}})
