"""Decontamination without Ray: eval files in, reject reasons and cut spans out."""

import json

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipeline.config import ConfigError, load_curate_config
from stages.base import apply_to_live_rows
from stages.decontaminate import (
    CONTAMINATED_BY,
    Decontaminate,
    DecontaminateConfig,
    ngram_hashes,
    read_passages,
)

QUESTION = (
    "A train leaves the station at nine in the morning and travels north at sixty miles "
    "per hour until it reaches the river crossing"
)
PASSAGE = (
    "The committee met on a cold morning in early March to decide whether the old "
    "lighthouse should be restored or finally taken down for good"
)
CLEAN = "Volunteers rebuilt the oyster reef below the ferry pier, one bag of shell at a time."


def _eval_files(tmp_path):
    (tmp_path / "math.jsonl").write_text(
        json.dumps({"question": QUESTION, "answer": 42}) + "\n\n"
        + json.dumps({"question": "Too short to match anything."}) + "\n"
    )  # fmt: skip
    (tmp_path / "reading.txt").write_text(f"{PASSAGE}\n\nAnother passage that no one copies.\n")
    return [
        {"path": str(tmp_path / "math.jsonl"), "name": "math", "text_field": "question"},
        {"path": str(tmp_path / "reading.txt"), "name": "reading"},
    ]


def _stage(tmp_path, **settings):
    return Decontaminate(DecontaminateConfig(eval_files=_eval_files(tmp_path), **settings))


def _batch(texts, formats=None):
    n = len(texts)
    return pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "ordinal": pa.array(range(n), pa.int64()),
            "format": formats or ["html"] * n,
            "text": texts,
            "drop_reason": pa.nulls(n, pa.string()),
            "drop_score": pa.nulls(n, pa.float64()),
            "drop_stage": pa.nulls(n, pa.string()),
        }
    )


def test_documents_sharing_a_13_gram_are_rejected_with_the_benchmark(tmp_path):
    stage = _stage(tmp_path)
    copied = f"Intro line.\n{QUESTION.upper()}!!\nOutro line."
    words = PASSAGE.split()
    thirteen = " ".join(words[3:16])
    twelve = " ".join(words[3:15])
    out = stage(_batch([CLEAN, copied, f"Quote: {thirteen}.", f"Quote: {twelve}.", "", None]))
    reasons = out.column("drop_reason").to_pylist()
    assert reasons == [None, "contaminated:math", "contaminated:reading", None, None, None]
    assert out.column("drop_score").to_pylist()[1] == len(QUESTION.split()) - 12
    assert out.column("drop_score").to_pylist()[2] == 1.0
    assert CONTAMINATED_BY not in out.column_names


def test_a_13_gram_spanning_line_breaks_matches(tmp_path):
    stage = _stage(tmp_path)
    words = PASSAGE.split()
    wrapped = " ".join(words[:5]) + "\n\n" + " ".join(words[5:9]) + ",\n" + " ".join(words[9:14])
    out = stage(_batch([f"Heading\n{wrapped}\nMore text follows here."]))
    assert out.column("drop_reason").to_pylist() == ["contaminated:reading"]


def test_min_matched_ngrams_and_formats(tmp_path):
    stage = _stage(tmp_path, min_matched_ngrams=5, apply_to_formats=["html"])
    one = " ".join(PASSAGE.split()[:13])  # exactly one 13-gram
    out = stage(_batch([one, PASSAGE, PASSAGE], ["html", "html", "code"]))
    assert out.column("drop_reason").to_pylist() == [None, "contaminated:reading", None]


def test_remove_spans_cuts_the_overlap_and_keeps_the_document(tmp_path):
    stage = _stage(tmp_path, mode="remove_spans")
    text = f'Before the quote.\n"{PASSAGE}." After the quote.'
    out = stage(_batch([text, CLEAN, PASSAGE]))
    assert out.column("drop_reason").to_pylist() == [None, None, "contaminated:reading"]
    assert out.column("text").to_pylist()[:2] == ["Before the quote.\nAfter the quote.", CLEAN]
    assert out.column(CONTAMINATED_BY).to_pylist() == ["reading", None, "reading"]
    assert out.column("text")[2].as_py() == PASSAGE  # a reject keeps its text for the snippet


def test_one_line_and_empty_documents_pass_and_rows_stay_in_place(tmp_path):
    stage = _stage(tmp_path)
    batch = _batch(["one line", "", None, QUESTION])
    out = apply_to_live_rows(stage, batch)
    assert out.column("id").to_pylist() == ["d0", "d1", "d2", "d3"]
    assert out.column("drop_stage").to_pylist() == [None, None, None, "decontaminate"]


def test_ngram_hashes_ignore_case_punctuation_and_whitespace():
    a, _ = ngram_hashes("Hello, World!  This\nis it", 3)
    b, _ = ngram_hashes("hello world this is it", 3)
    assert a.tolist() == b.tolist() and len(a) == 3
    assert ngram_hashes("too short", 3)[0].size == 0
    cjk, found = ngram_hashes("汉字也能匹配", 3)  # each CJK character is a word
    assert len(found) == 6 and cjk.size == 4


def test_eval_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"other": 1}\n')
    with pytest.raises(ValueError, match="line 2: no field"):
        read_passages(
            DecontaminateConfig(eval_files=[{"path": str(bad), "name": "b"}]).eval_files[0]
        )
    with pytest.raises(ValidationError, match="unique"):
        DecontaminateConfig(eval_files=[{"path": "a", "name": "x"}, {"path": "b", "name": "x"}])
    with pytest.raises(ValidationError):
        DecontaminateConfig(eval_files=[{"path": "a", "name": "has space"}])


def test_config_resolves_eval_files_and_names_a_missing_one(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "e.jsonl").write_text('{"text": "x"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(
        "inputs: [{path: data}]\noutput_dir: out\nstages:\n  decontaminate:\n"
        "    eval_files: [{path: evals/e.jsonl, name: e}, {path: evals/missing.txt, name: m}]\n"
    )
    with pytest.raises(ConfigError, match=r"stages\.decontaminate\.eval_files\[1\]\.path"):
        load_curate_config(config)
    config.write_text(config.read_text().replace(", {path: evals/missing.txt, name: m}", ""))
    loaded = load_curate_config(config)
    assert loaded.stages.decontaminate.eval_files[0].path == str(tmp_path / "evals" / "e.jsonl")
