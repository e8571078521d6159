"""``python -m bench all --quick`` runs to the end without the shared data, the network
or datatrove, and writes RESULTS.md and results.json with a section for every part:
the end-to-end comparison (peer rows say "peer not installed"), scaling, each
per-stage script (with its rows, or why it has none), and the crawl run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import crawl
from bench.contract import validate
from bench.stage_scripts import STAGE_SCRIPTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_all_quick_writes_every_section(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATATROVE_PYTHON"}
    env |= {
        "LONGCAT_BENCH_CACHE": str(tmp_path / "cache"),  # no datatrove venv in there
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(ROOT),
    }
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bench", "all", "--quick", "--out", str(out),
               "--data", str(tmp_path / "no-shared-data"), "--stage-timeout", "120"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    markdown = (out / "RESULTS.md").read_text()
    assert results["quick"] is True
    assert results["machine"]["cores"] and results["machine"]["python"]
    assert any("demo" in note for note in results["corpus_notes"])
    sections = {s["name"]: s for s in results["sections"]}
    expected = {"End-to-end curation", "Scaling", crawl.SECTION_NAME}
    expected |= {f"Per stage: {script.name}" for script in STAGE_SCRIPTS}
    assert set(sections) == expected
    for name, section in sections.items():
        assert f"## {name}" in markdown
        assert section["status"], name
        assert not validate({"bench": name, "rows": section["rows"]}, name)

    e2e = sections["End-to-end curation"]
    assert e2e["status"] == "ok", e2e["status"]
    first = e2e["rows"][0]
    assert first["ours"] > 0 and first["peer"] is None
    assert "peer not installed" in first["peer_name"]
    assert "peer not installed" in markdown

    scaling = {r["measure"]: r for r in sections["Scaling"]["rows"]}
    speedup = next(r for m, r in scaling.items() if m.startswith("speed-up"))
    assert speedup["ours"] > 0 and speedup["peer"] > 0 and speedup["ratio"] > 0
    memory = [r for m, r in scaling.items() if m.startswith("peak memory")]
    assert len(memory) == 3  # 1x, 4x, 16x; --quick measures only the run it already has
    measured = [r["ours"] for r in memory if r["ours"] is not None]
    assert measured and all(mib > 0 for mib in measured)

    crawl_section = sections[crawl.SECTION_NAME]
    assert crawl_section["status"] == "ok", crawl_section["status"]
    crawl_rows = {r["measure"]: r for r in crawl_section["rows"]}
    assert crawl_rows["ours, 1 CPU, against the floor"]["ratio"] > 0
    assert crawl_rows["ours, 1 CPU, against datatrove 1 task"]["peer"] is None

    # without the shared data, the data-reading scripts say they skipped; none crashed
    for script in STAGE_SCRIPTS:
        status = sections[f"Per stage: {script.name}"]["status"]
        assert not status.startswith(("failed", "timed out")), (script.module, status)
        if script.data is not None and status != "ok":
            assert status.startswith(("skipped", "not run")), (script.module, status)


# ---------------------------------------------------------------- the pieces, fast


def _write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(body)


def _run_fake(tmp_path: Path, module: str, timeout: float = 60) -> dict:
    from bench.stage_scripts import StageScript, run_stage_script

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    script = StageScript("fake", module, "a fake stage", None)
    return run_stage_script(script, quick=True, data=tmp_path, timeout=timeout, env=env)


def test_stage_script_outcomes_become_sections(tmp_path: Path) -> None:
    _write_module(
        tmp_path, "fake_nojson", "import argparse\nargparse.ArgumentParser().parse_args()\n"
    )
    _write_module(
        tmp_path, "fake_crash", "import argparse, sys\nraise SystemExit('boom: bad input')\n"
    )
    _write_module(
        tmp_path,
        "fake_good",
        "import sys\nfrom bench.contract import row, write_json\nfrom pathlib import Path\n"
        "path = Path(sys.argv[sys.argv.index('--json') + 1])\n"
        "write_json(path, 'fake', [row('speed', 4.0, 2.0, peer_name='raw', unit='x/s')], ['n'])\n",
    )
    _write_module(
        tmp_path,
        "fake_invalid",
        "import sys, json\npath = sys.argv[sys.argv.index('--json') + 1]\n"
        "rows = [{'measure': 'm', 'ours': 'fast'}]\n"
        "open(path, 'w').write(json.dumps({'bench': 'x', 'rows': rows}))\n",
    )
    assert _run_fake(tmp_path, "fake_nojson")["status"].startswith("not run: no --json")
    crashed = _run_fake(tmp_path, "fake_crash")["status"]
    assert crashed.startswith("failed: exit status 1") and "boom: bad input" in crashed
    good = _run_fake(tmp_path, "fake_good")
    assert good["status"] == "ok" and good["rows"][0]["ratio"] == 2.0
    _write_module(tmp_path, "fake_slow", "import time\ntime.sleep(60)\n")
    assert _run_fake(tmp_path, "fake_slow", timeout=1)["status"].startswith("timed out after 1 s")
    invalid = _run_fake(tmp_path, "fake_invalid")["status"]
    assert invalid.startswith("failed") and "rows[0].ours must be a number" in invalid


def test_row_ratio_favours_ours_both_ways() -> None:
    from bench.contract import row

    assert row("rate", 30.0, 10.0)["ratio"] == 3.0
    assert row("padding", 0.01, 0.04, higher_is_better=False)["ratio"] == 4.0
    assert row("count", 5, 7, compare=False)["ratio"] is None
    assert row("nan", float("nan"), 1.0)["ours"] is None


def test_corpus_pages_and_texts_round_trip_through_our_reader(tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    from bench.corpus import Item, Pool, write_corpus
    from stages.readers import ReaderConfig, read_file

    pool = Pool()
    for n in range(3):
        html = f"<html><body><p>Page {n} text.</p></body></html>".encode()
        pool.add(Item("web", f"https://example.invalid/{n}", html))
        pool.add(Item("text", f"https://bench.invalid/t/{n}", f"text number {n}"))
    taken = pool.take(8)
    assert len({i.url for i in taken}) == 8  # 6 items, then copies with distinct URLs
    assert {i.kind for i in taken[:2]} == {"web", "text"}  # round-robin over kinds
    corpus = write_corpus(taken, tmp_path / "corpus")
    assert corpus.documents == 8 and sorted(corpus.urls) == sorted(i.url for i in taken)
    found = {}
    for path in sorted((tmp_path / "corpus").rglob("part-*")):
        for doc in read_file(str(path), path.name, pafs.LocalFileSystem(), ReaderConfig()):
            assert doc["drop_reason"] is None
            found[doc["url"]] = doc["html"] or doc["text"]
    assert sorted(found) == sorted(corpus.urls)
    assert "Page 2 text." in found["https://example.invalid/2"]


def test_agreement_of_two_fates() -> None:
    from bench.e2e import Fates, agreement

    ours = Fates(
        step={"a": "kept", "b": "minhash", "c": "heuristics", "d": "kept", "e": "langid"},
        reason={"c": "gopher_too_few_words"},
        clusters=[["a", "b"]],
    )
    peer = Fates(
        step={"a": "kept", "b": "minhash", "c": "kept", "d": "heuristics", "e": "langid"},
        reason={"d": "gopher_below_alpha_threshold"},
        clusters=[["a", "b"]],
    )
    result = agreement(ours, peer)
    assert result["survivors_jaccard"] == 2 / 4  # {a, b, d} vs {a, b, c}
    assert result["heuristic_decision_agreement"] == 2 / 4
    assert result["dropped_only_by_ours"] == {"gopher_too_few_words": 1}
    assert result["dropped_only_by_peer"] == {"gopher_below_alpha_threshold": 1}
    assert result["near_dup_pair_precision"] == result["near_dup_pair_recall"] == 1.0
