import pyarrow as pa

from pipeline.ledger import build_ledger, merge_stage_counts, render_funnel, stage_counts


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
