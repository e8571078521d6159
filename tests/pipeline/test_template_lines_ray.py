"""The template-lines step on Ray: counts are global (a line spread over shards, never
frequent inside one, is found), and the decision is written per shard with a summary."""

from __future__ import annotations

import json

import pyarrow as pa

from pipeline.curate import RunLayout, apply_steps
from pipeline.round_driver import decide, global_step
from pipeline.shards import Shard, write_parquet_atomic
from pipeline.template_rounds import TEMPLATE_LINES
from stages.template_lines import REASON_TEMPLATE_ONLY, REMOVED_COLUMN, TemplateLinesConfig

NOTE = "Support independent local journalism: become a member today."
SHARDS = 3


def _write_shard(layout: RunLayout, shard: int, rows: list[tuple[str, str]]) -> None:
    table = pa.table(
        {
            "id": [f"s{shard}-{i}" for i in range(len(rows))],
            "shard": pa.array([shard] * len(rows), pa.int32()),
            "ordinal": pa.array(range(len(rows)), pa.int64()),
            "url": [url for url, _ in rows],
            "format": ["html"] * len(rows),
            "text": [text for _, text in rows],
        }
    )
    write_parquet_atomic(layout.filesystem, layout.work_documents(shard), table)


def test_counts_are_global_across_shards(ray_session, tmp_path):
    layout = RunLayout.for_output(str(tmp_path / "out"))
    for shard in range(SHARDS):
        # One page of the site per shard: no shard alone reaches 3 documents.
        letter = "abc"[shard]  # no digits: lines that differ only in digits are one line
        rows = [
            (
                f"https://news.example/{shard}",
                f"{NOTE}\nA story from shard {letter} on the harbour.",
            ),
            (f"https://blog{shard}.example/p", f"A personal post ({letter}) about bread."),
        ]
        if shard == SHARDS - 1:
            rows.append(("https://news.example/empty", NOTE))
        _write_shard(layout, shard, rows)
    shards = [Shard(index, 0, ()) for index in range(SHARDS)]
    settings = TemplateLinesConfig(min_host_documents=3, min_corpus_documents=None)
    step = global_step(TEMPLATE_LINES, settings, driver_max_bytes=0)
    decide(TEMPLATE_LINES, layout, shards, [], [], "f0", settings, driver_max_bytes=0)

    summary = json.loads(
        (tmp_path / "out" / "work" / "template_lines" / "f0" / "_SUCCESS").read_text()
    )
    report = summary["report"]
    assert report["top_lines"] == [{"line": NOTE, "documents": SHARDS + 1}]
    # The kept documents that lost a line, and apart the one left with nothing.
    assert report["documents_changed"] == SHARDS and report["lines_removed"] == SHARDS
    assert report["template_only"] == 1 and report["template_only_lines"] == 1
    for shard in range(SHARDS):
        kept, [(name, dropped)] = apply_steps(layout, shard, [step], ["f0"])
        assert name == "template_lines"
        assert not any(NOTE in text for text in kept.column("text").to_pylist())
        assert kept.column(REMOVED_COLUMN).to_pylist()[0] == 1
        expected = [REASON_TEMPLATE_ONLY] if shard == SHARDS - 1 else []
        assert dropped.column("drop_reason").to_pylist() == expected
