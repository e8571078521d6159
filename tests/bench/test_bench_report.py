"""``bench.report.merge_markdown``: a run of some sections keeps the others."""

from __future__ import annotations

from bench.report import KEPT_NOTE, merge_markdown


def _file(*sections: tuple[str, str]) -> str:
    body = "".join(f"\n## {title}\n\n{text}\n" for title, text in sections)
    return "# Benchmark results\n\nGenerated today.\n" + body


def test_sections_not_rerun_are_kept_and_marked():
    previous = _file(("Machine", "old box"), ("Crawl", "old crawl"), ("Prefilter", "study"))
    current = _file(("Machine", "new box"), ("Crawl", "new crawl"))
    merged = merge_markdown(previous, current)
    assert merged.startswith(current.rstrip("\n"))
    assert "old box" not in merged and "old crawl" not in merged
    assert merged.count("## Prefilter") == 1 and "study" in merged
    after = merged.split("## Prefilter", 1)[1]
    assert after.lstrip().startswith(KEPT_NOTE)
    assert merge_markdown(merged, current) == merged  # marked once, stable


def test_a_full_run_replaces_everything():
    previous = _file(("Machine", "old"), ("Crawl", "old crawl"))
    current = _file(("Machine", "new"), ("Crawl", "new crawl"))
    assert merge_markdown(previous, current) == current
