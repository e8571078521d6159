import pyarrow as pa

from pipeline.ledger import (
    build_ledger,
    language_counts,
    merge_language_counts,
    merge_stage_counts,
    move_to_dropped,
    render_funnel,
    stage_changes,
    stage_counts,
)
from stages.base import DROP_REASON, DROP_STAGE


def _batch(stages, reasons):
    return pa.table(
        {"drop_stage": pa.array(stages, pa.string()), "drop_reason": pa.array(reasons, pa.string())}
    )


def test_counts_chain_from_stage_to_stage_and_split_errors():
    batch = _batch(
        [None, "read", "extract", "extract", "langid", None],
        [
            None,
            "corrupt_gzip",
            "no_extractable_text",
            "error:extract_timeout",
            "language_not_selected",
            None,
        ],
    )
    counts = stage_counts(batch, ["read", "extract", "langid"])
    assert counts["read"] == {"input": 6, "kept": 5, "rejected": {"corrupt_gzip": 1}, "errors": {}}
    assert counts["extract"]["input"] == 5 and counts["extract"]["kept"] == 3
    assert counts["extract"]["errors"] == {"error:extract_timeout": 1}
    assert counts["langid"]["kept"] == 2
    ledger = build_ledger(
        merge_stage_counts([counts, counts], ["read", "extract", "langid"]), documents_written=4
    )
    assert ledger["totals"] == {"input": 12, "kept": 4, "rejected": 6, "errors": 2}
    assert ledger["identity_holds"]
    assert "holds" in render_funnel(ledger)


def test_identity_fails_when_written_documents_do_not_match():
    counts = stage_counts(_batch([None], [None]), ["read"])
    assert not build_ledger(counts, documents_written=0)["identity_holds"]


def test_funnel_shows_what_an_editing_stage_changed():
    """Template lines rewrite documents they keep: the funnel says how many and how many
    lines went, next to the documents it rejected, and the identity still holds."""
    counts = stage_counts(
        _batch([None, None, "template_lines", None], [None, None, "template_only", None]),
        ["read", "template_lines"],
    )
    ledger = build_ledger(counts, documents_written=3)
    report = {"documents_changed": 2, "lines_removed": 5, "template_only": 1, "top_lines": []}
    ledger["stages"]["template_lines"]["report"] = report
    assert stage_changes(ledger["stages"]["template_lines"]) == (2, 5)
    assert stage_changes(ledger["stages"]["read"]) is None
    assert stage_changes({"report": {"cluster_sizes": {"2": 1}}}) is None  # MinHash's report
    funnel = render_funnel(ledger).splitlines()
    assert funnel[0].split()[:6] == ["stage", "input", "kept", "rejected", "errors", "changed"]
    read, template = funnel[1].split(), funnel[2].split()
    assert read[:5] == ["read", "4", "4", "0", "0"] and read[5:] == []  # nothing changed
    assert template[:6] == ["template_lines", "4", "3", "1", "0", "2"]
    assert "template_only=1" in funnel[2]
    assert "lines_removed=5 from 2 kept documents" in funnel[2]
    assert funnel[-1].endswith("holds")


def _rows(languages, stages, reasons):
    return pa.table(
        {
            "language": pa.array(languages, pa.string()),
            DROP_STAGE: pa.array(stages, pa.string()),
            DROP_REASON: pa.array(reasons, pa.string()),
        }
    )


def test_language_counts_follow_each_language_through_the_global_steps():
    shard = _rows(
        ["zh", "zh", "en", None, "zh", None],
        [None, "heuristics", None, "extract", None, None],
        [None, "gopher_dup_line_fraction", None, "no_extractable_text", None, None],
    ).append_column("format", pa.array(["html"] * 5 + ["code"]))
    counts = language_counts(shard)
    assert counts == {
        "zh": {"kept": 2, "dropped": {"heuristics:gopher_dup_line_fraction": 1}},
        "en": {"kept": 1, "dropped": {}},
        "und": {"kept": 0, "dropped": {"extract:no_extractable_text": 1}},
        "code": {"kept": 1, "dropped": {}},
    }
    # Exact dedup later drops one of the Chinese documents that pass 1 kept.
    dropped = pa.table({"language": ["zh"], DROP_REASON: ["exact_duplicate"]})
    counts = move_to_dropped(counts, dropped, "exact_dedup")
    assert counts["zh"] == {
        "kept": 1,
        "dropped": {"heuristics:gopher_dup_line_fraction": 1, "exact_dedup:exact_duplicate": 1},
    }
    other = {"en": {"kept": 4, "dropped": {"langid:language_score_below_min": 1}}}
    merged = merge_language_counts([counts, other])
    assert list(merged) == ["en", "zh", "code", "und"]  # most documents in first
    assert merged["en"] == {"kept": 5, "dropped": {"langid:language_score_below_min": 1}}
    ledger = {
        "stages": {},
        "totals": {"input": 9, "kept": 6, "rejected": 3, "errors": 0},
        "identity_holds": True,
        "languages": merged,
    }
    text = render_funnel(ledger)
    assert "zh" in text and "33.3%" in text  # 1 of 3 Chinese documents kept
    assert "heuristics:gopher_dup_line_fraction=1" in text
