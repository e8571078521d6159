"""``bench.filter_recall --extract-settings``: each trafilatura setting extracts the pages
with a gold text, and the table gives per language the token F1 against the gold and the
share the default filters keep. Pages written for this test; no ../shared needed."""

from __future__ import annotations

import pytest

pytest.importorskip("trafilatura")
pytest.importorskip("fasttext")

from bench import filter_recall as fr

ARTICLE = (
    "The harbour authority opened the new ferry terminal on Saturday after two years of "
    "building work. Passengers can now board from a covered hall with a café, a waiting "
    "room and lifts to every platform. The old terminal will be pulled down in spring. "
    "Officials said the larger berths let bigger ships call at the port in winter. "
    "Local shops expect more visitors, and the town has added two bus lines to the quay. "
    "The terminal cost forty million euros, most of it from the regional budget."
)
SECOND = (
    "Fishermen were less pleased. Their boats now share the inner basin with the ferries, "
    "and several skippers told the council that the new traffic rules leave them too little "
    "room at dawn, when most of them land their catch. The council promised a review in "
    "June and said a separate pier for the fishing fleet is in next year's plan."
)
MENU = "".join(f"<li><a href='/s{i}'>Section {i}</a></li>" for i in range(12))
PAGE = (
    f"<html><head><title>Ferry terminal</title></head><body><nav><ul>{MENU}</ul></nav>"
    f"<table><tr><td>Home</td><td>News</td></tr><tr><td></td><td><p>{ARTICLE}</p>"
    f"<p>{SECOND}</p></td></tr></table></body></html>"
)


def test_extract_settings_table(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGCAT_BENCH_CACHE", str(tmp_path))
    gold = ARTICLE + "\n" + SECOND
    docs = [fr.Doc("daniel", "ferry", "en", fr.GENUINE, html=PAGE, gold=gold)]
    rows, lines = fr.compare_extract_settings(docs)
    table = [line for line in lines if line.startswith("| ") and " en " in line]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table] == list(fr.EXTRACT_SETTINGS)
    default = table[0].split(" | ")
    assert float(default[3]) > 0.9  # the article survives the default extraction
    assert default[5] == "100.0% |"  # and the default filters keep it
    assert len(rows) == len(fr.EXTRACT_SETTINGS)
    assert all(0.0 <= r["ours"] <= 1.0 for r in rows)
    assert any(tmp_path.joinpath("filter_recall").glob("extracted-*.json"))  # cached
