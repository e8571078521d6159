"""Template-line removal without Ray: which lines count as templates, how text is
rewritten, and what is rejected (the Ray path is in tests/pipeline/test_template_lines_ray.py)."""

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from stages.template_lines import (
    DECISION_SCHEMA,
    REASON_TEMPLATE_ONLY,
    REMOVED_COLUMN,
    TemplateLinesConfig,
    apply_template_decision,
    find_template_lines_in_memory,
    host_of,
    line_key,
    remove_lines,
    template_removals,
)

NAV = "Home | Local news | Sport | Weather | Contact the newsroom"
COOKIE = "We use cookies to improve your experience on this site."
FOOTER = "© 2024 Harbor Media Ltd. All rights reserved."
BODIES = [
    "Volunteers rebuilt the oyster reef below the ferry pier.",
    "The bakery on Mill Street reopened after a long winter.",
    "Cyclists asked the council for a protected lane downtown.",
    "A new tool library lends drills and ladders to neighbours.",
    "Street trees cool the block by several degrees in July.",
]
HOST_ONLY = TemplateLinesConfig(min_host_documents=3, min_corpus_documents=None)


def _docs(rows):
    """rows: (url, text[, format]); ids d0.., shard = index % 2."""
    return pa.table(
        {
            "id": [f"d{i}" for i in range(len(rows))],
            "shard": pa.array([i % 2 for i in range(len(rows))], pa.int32()),
            "ordinal": pa.array(range(len(rows)), pa.int64()),
            "url": [r[0] for r in rows],
            "format": [r[2] if len(r) > 2 else "html" for r in rows],
            "text": [r[1] for r in rows],
        }
    )


def _run(rows, cfg):
    documents = _docs(rows)
    decision, counts, examples = find_template_lines_in_memory(documents, cfg)
    assert decision.schema == DECISION_SCHEMA
    kept, dropped = apply_template_decision(documents, decision, cfg)
    assert kept.num_rows + dropped.num_rows == documents.num_rows  # nothing lost silently
    return kept, dropped, counts, examples


def _site(host, bodies, *template_lines):
    return [
        (f"https://{host}/a{i}", "\n".join([*template_lines, body]))
        for i, body in enumerate(bodies)
    ]


def test_lines_repeated_on_one_host_are_removed_and_counted():
    rows = _site("www.harbor.example", BODIES[:4], NAV, FOOTER)
    kept, dropped, counts, examples = _run(rows, HOST_ONLY)
    assert dropped.num_rows == 0
    assert kept.column("text").to_pylist() == BODIES[:4]
    assert kept.column(REMOVED_COLUMN).to_pylist() == [2, 2, 2, 2]
    assert sorted(examples.values()) == sorted([NAV, FOOTER])
    assert set(counts.values()) == {4}


def test_per_host_threshold_does_not_pool_hosts():
    # Two documents on each of two hosts: below 3 per host, so nothing is a template.
    rows = _site("a.example", BODIES[:2], NAV) + _site("b.example", BODIES[2:4], NAV)
    kept, _, _, _ = _run(rows, HOST_ONLY)
    assert all(NAV in text for text in kept.column("text").to_pylist())
    # The corpus-wide rule sees all four (any host, or none) and removes it.
    corpus = TemplateLinesConfig(min_host_documents=None, min_corpus_documents=4)
    kept, _, _, _ = _run(rows, corpus)
    assert not any(NAV in text for text in kept.column("text").to_pylist())


def test_corpus_fraction_counts_documents_considered():
    rows = _site("a.example", BODIES[:2], COOKIE) + [(None, body) for body in BODIES[2:]]
    at_half = TemplateLinesConfig(min_host_documents=None, min_corpus_documents=None,
                                  min_corpus_fraction=0.4)  # fmt: skip
    kept, _, _, _ = _run(rows, at_half)  # 2 of 5 documents = 0.4
    assert not any(COOKIE in t for t in kept.column("text").to_pylist())
    above = at_half.model_copy(update={"min_corpus_fraction": 0.5})
    kept, _, _, _ = _run(rows, above)
    assert sum(COOKIE in t for t in kept.column("text").to_pylist()) == 2


def test_document_without_url_only_meets_the_corpus_rule():
    rows = [(None, f"{NAV}\n{body}") for body in BODIES[:4]]
    kept, _, _, _ = _run(rows, HOST_ONLY)
    assert all(NAV in t for t in kept.column("text").to_pylist())


def test_all_boilerplate_document_is_rejected_as_template_only():
    rows = _site("harbor.example", BODIES[:3], NAV, FOOTER)
    rows.append(("https://harbor.example/empty", f"{NAV}\n\n{FOOTER}\n"))
    kept, dropped, _, _ = _run(rows, HOST_ONLY)
    assert dropped.column("id").to_pylist() == ["d3"]
    assert dropped.column("drop_reason").to_pylist() == [REASON_TEMPLATE_ONLY]
    assert dropped.column("drop_score").to_pylist() == [0.0]
    assert NAV in dropped.column("text")[0].as_py()  # the reject shows what it was
    assert kept.column("id").to_pylist() == ["d0", "d1", "d2"]


def test_too_little_left_is_a_config_key():
    rows = _site("harbor.example", BODIES[:3], NAV)
    rows.append(("https://harbor.example/short", f"{NAV}\nThanks!"))
    cfg = HOST_ONLY.model_copy(update={"min_remaining_chars": 10})
    _, dropped, _, _ = _run(rows, cfg)
    assert dropped.column("id").to_pylist() == ["d3"]
    assert dropped.column("drop_score").to_pylist() == [len("Thanks!")]


def test_one_line_and_empty_documents():
    rows = [(f"https://harbor.example/{i}", NAV) for i in range(3)]  # one line each: all template
    rows += [("https://harbor.example/x", ""), ("https://harbor.example/y", None)]
    rows.append(("https://harbor.example/z", BODIES[0]))  # one line, not a template
    kept, dropped, _, _ = _run(rows, HOST_ONLY)
    assert dropped.column("id").to_pylist() == ["d0", "d1", "d2"]
    assert kept.column("text").to_pylist() == ["", None, BODIES[0]]
    assert kept.column(REMOVED_COLUMN).to_pylist() == [0, 0, 0]


def test_short_lines_and_code_are_left_alone():
    rows = [(f"https://h.example/{i}", f"Share\n{BODIES[i]}") for i in range(3)]
    rows += [(None, f"    return result\n{BODIES[i]}", "code") for i in range(3)]
    cfg = TemplateLinesConfig(min_host_documents=3, min_corpus_documents=3, min_line_chars=10)
    kept, _, _, _ = _run(rows, cfg)
    assert kept.column(REMOVED_COLUMN).to_pylist() == [0] * 6


def test_normalisation_matches_case_spacing_punctuation_and_digits():
    cfg = TemplateLinesConfig()
    a, b = "© 2023 Harbor Media.  All rights reserved", "© 2024 harbor media - all rights reserved!"
    assert line_key(a, cfg) == line_key(b, cfg)
    assert line_key("Page 3 of 10", cfg) == line_key("page 7 of 12", cfg)
    raw = TemplateLinesConfig(normalize=False, mask_digits=False)
    assert line_key("Page 3 of 10", raw) != line_key("page 3 of 10", raw)


def test_a_document_counts_once_however_often_it_repeats_a_line():
    rows = [("https://h.example/a", f"{NAV}\n{NAV}\n{NAV}\n{BODIES[0]}")]
    rows += [("https://h.example/b", f"{NAV}\n{BODIES[1]}")]
    kept, _, _, _ = _run(rows, HOST_ONLY)  # 2 documents < 3
    assert kept.column(REMOVED_COLUMN).to_pylist() == [0, 0]


def test_remove_lines_keeps_paragraph_gaps_single():
    assert remove_lines("A\n\nT\n\nB", {2}) == "A\n\nB"
    assert remove_lines("T\n\nA\nB", {0}) == "A\nB"
    assert remove_lines("A\n\nT\n", {2}) == "A"
    assert remove_lines("A\n\n\nB", set()) == "A\n\n\nB"
    assert remove_lines("T", {0}) == ""


def test_apply_without_text_still_drops_template_only_documents():
    rows = _site("harbor.example", BODIES[:3], NAV)
    rows.append(("https://harbor.example/empty", NAV))
    documents = _docs(rows)
    decision, _, _ = find_template_lines_in_memory(documents, HOST_ONLY)
    kept, dropped = apply_template_decision(documents.select(["id"]), decision, HOST_ONLY)
    assert kept.column("id").to_pylist() == ["d0", "d1", "d2"]
    assert dropped.column("id").to_pylist() == ["d3"]


def test_config_rejects_every_rule_off_and_bad_values():
    with pytest.raises(ValidationError, match="every rule is off"):
        TemplateLinesConfig(min_host_documents=None, min_corpus_documents=None)
    with pytest.raises(ValidationError):
        TemplateLinesConfig(min_host_documents=1)
    with pytest.raises(ValidationError):
        TemplateLinesConfig(min_corpus_fraction=1.5)


def test_host_of():
    assert host_of("https://www.Harbor.example:8080/x?y=1") == "harbor.example"
    assert host_of(None) is None and host_of("not a url") is None


@pytest.mark.parametrize(
    "cfg",
    [
        HOST_ONLY,
        TemplateLinesConfig(min_host_documents=None, min_corpus_documents=4),
        TemplateLinesConfig(min_host_documents=2, min_corpus_fraction=0.05),
    ],
)
def test_removals_of_a_whole_partition_equal_those_of_each_line_alone(cfg):
    """A shuffle partition holds many line hashes; one call over it must keep exactly
    the rows that a call per line hash keeps."""
    rng = random.Random(2)
    rows = [
        {
            "line_hash": rng.randrange(-40, 40),
            "host": rng.choice(["a.example", "b.example", "c.example", None]),
            "id": f"d{n}",
            "shard": n % 3,
            "ordinal": n,
            "line_indices": [rng.randrange(30)],
        }
        for n in range(600)
    ]
    pairs = pa.Table.from_pylist(rows).cast(
        pa.schema(
            [
                ("line_hash", pa.int64()),
                ("host", pa.string()),
                ("id", pa.string()),
                ("shard", pa.int32()),
                ("ordinal", pa.int64()),
                ("line_indices", pa.list_(pa.int32())),
            ]
        )
    )
    whole = template_removals(pairs, cfg, total_documents=600)
    alone = pa.concat_tables(
        template_removals(pairs.filter(pc.equal(pairs.column("line_hash"), h)), cfg, 600)
        for h in pc.unique(pairs.column("line_hash")).to_pylist()
    )
    assert 0 < whole.num_rows < pairs.num_rows
    assert sorted(whole.column("id").to_pylist()) == sorted(alone.column("id").to_pylist())
