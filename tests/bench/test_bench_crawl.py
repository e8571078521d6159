"""``bench.crawl``: the crawl is built once and cached, the process-tree sampler counts
CPU that the command's own rusage cannot see (a descendant that outlives it), the large
file is one file of the asked size, the table's ratios point the right way, and
``python -m bench.crawl --quick`` runs every row end to end without ../shared or
datatrove. No test asserts a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from bench.contract import validate
from bench.corpus import Item, Pool
from bench.crawl import (
    LARGE_SHARDS,
    WARC_FILES,
    build_crawl,
    large_file_shard_bytes,
    page_pool,
    run_measured,
    section_rows,
    write_large_file,
)
from stages.readers import ReaderConfig, read_file

ROOT = Path(__file__).resolve().parents[2]


def _pool(pages: int) -> Pool:
    pool = Pool(origin="test")
    for n in range(pages):
        html = f"<html><body><p>Page {n}: some words of text here.</p></body></html>"
        pool.add(Item("web", f"https://example.invalid/{n}", html.encode()))
    pool.add(Item("text", "https://example.invalid/a-text", "a text, not a page"))
    return pool


def test_crawl_is_pages_only_in_warc_files_and_cached(tmp_path: Path) -> None:
    pool = page_pool(_pool(40))
    assert set(pool.kinds) == {"web"}
    crawl = build_crawl(pool, 75, tmp_path / "crawl")  # more than the pool: copies
    files = sorted(crawl.warc_dir.glob("*.warc.gz"))
    assert len(files) == WARC_FILES and crawl.pages == 75
    urls = []
    for path in files:
        for doc in read_file(str(path), path.name, pafs.LocalFileSystem(), ReaderConfig()):
            assert doc["drop_reason"] is None and doc["html"]
            urls.append(doc["url"])
    assert len(urls) == 75 and len(set(urls)) == 75
    stamps = [p.stat().st_mtime_ns for p in files]
    again = build_crawl(pool, 75, tmp_path / "crawl")  # the same selection: reused
    assert again == crawl
    assert [p.stat().st_mtime_ns for p in files] == stamps
    smaller = build_crawl(pool, 10, tmp_path / "crawl")  # another selection: rebuilt
    assert smaller.pages == 10 and len(list(smaller.warc_dir.glob("*.warc.gz"))) == 10


@pytest.mark.parametrize(
    ("detach", "parent_waits"),
    [(False, 0.0), (True, 1.0)],
    ids=["left-in-the-session", "own-session-seen-in-the-tree"],
)
def test_sampler_counts_a_descendant_that_outlives_the_command(
    detach: bool, parent_waits: float
) -> None:
    # The command starts a grandchild that keeps burning CPU after the command exits:
    # the command's wait4 rusage cannot include it, the sampler must (by session when
    # the parent is gone before a sample saw it, by ancestry while the parent lives).
    burner = "n = 0\nfor i in range(20_000_000): n += i\n"
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {burner!r}], start_new_session={detach})\n"
        f"time.sleep({parent_waits})\n"
    )
    measured = run_measured([sys.executable, "-c", script], dict(os.environ), timeout=120)
    assert measured.status == 0
    assert measured.orphans == 1 and measured.processes == 2
    assert measured.cpu_sampled_s > measured.cpu_rusage_s
    assert measured.cpu_s == measured.cpu_sampled_s
    assert measured.peak_mib > 0


def test_descendants_left_alive_after_the_grace_are_killed() -> None:
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid)\n"
    )
    with tempfile.NamedTemporaryFile("r") as out:
        command = [sys.executable, "-c", script]
        measured = run_measured(command, dict(os.environ), 60, Path(out.name), grace_s=0.5)
        leftover = int(Path(out.name).read_text())
    assert measured.status == 0 and measured.orphans == 1 and measured.killed == 1
    for _ in range(50):  # killed; reaped by init shortly after
        if not Path(f"/proc/{leftover}").exists() or "Z" in _state(leftover):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{leftover}").exists() or "Z" in _state(leftover)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_sampler_reports_failure_and_kills_on_timeout(tmp_path: Path) -> None:
    failed = run_measured([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), 60)
    assert failed.status == 3
    slow = run_measured([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), 1)
    assert slow.status == -9


def test_large_file_is_one_file_of_the_asked_size(tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    lines = [{"id": f"u{n}", "url": f"u{n}", "text": "word " * 200} for n in range(5)]
    texts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "large" / "big.jsonl"
    documents, written = write_large_file(texts, 50_000, out)
    assert written >= 50_000 and out.stat().st_size == written
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == documents > 5
    assert len({r["id"] for r in rows}) == documents  # copies keep distinct ids
    assert {r["text"] for r in rows} == {"word " * 200}


@pytest.mark.parametrize("extra", [0, 1, 3, 7])
def test_the_large_file_is_cut_into_the_pieces_the_bench_says(tmp_path: Path, extra: int) -> None:
    """The planner cuts a file into ceil(size / target) pieces: size // 8 as the target
    made 9 pieces of a file 8 * k + 3 bytes long, and on 2 CPUs 9 pieces take five waves."""
    from pipeline.shards import list_input, plan_shards

    line = json.dumps({"text": "word " * 30}) + "\n"
    big = tmp_path / "big.jsonl"
    big.write_text(line * 4000 + "x" * extra)  # ~0.6 MB plus a few bytes past a multiple
    filesystem, files = list_input(str(big), "big")
    target = large_file_shard_bytes(big.stat().st_size)
    shards = plan_shards([files], target, [filesystem])
    assert len(shards) == LARGE_SHARDS
    # The bench's curate config plans a lead shard first (its default lead_shard_bytes,
    # as the bench's note says); the file's other pieces stay LARGE_SHARDS.
    led = plan_shards([files], target, [filesystem], lead_shard_bytes=20_000)
    assert len(led) == LARGE_SHARDS + 1 and led[0].size_bytes == 20_000


def _run(rate: float, wall: float, mib: float, first: float | None = None) -> dict:
    return {"docs_per_cpu_s": rate, "wall_s": wall, "peak_mib": mib, "first_document_s": first}


def test_rows_compare_with_the_floor_and_datatrove() -> None:
    runs = {
        "floor": _run(20.0, 50.0, 600.0),
        "ours_1": _run(15.0, 80.0, 2000.0, 12.0),
        "ours_2": _run(14.0, 45.0, 2800.0, 10.0),
        "datatrove_1": _run(10.0, 120.0, 400.0),
        "datatrove_2": _run(9.0, 60.0, 700.0),
        "large_1": _run(30.0, 40.0, 1500.0),
        "large_2": {"error": "curate exited with 1"},
        "load_average_at_start": [0.5, 0.7, 0.9],
    }
    rows = {r["measure"]: r for r in section_rows(runs, "datatrove")}
    assert not validate({"bench": "crawl", "rows": list(rows.values())}, "crawl")
    assert rows["ours, 1 CPU, against the floor"]["ratio"] == 15.0 / 20.0
    assert rows["ours, 2 CPUs, against datatrove 2 tasks"]["ratio"] == 14.0 / 9.0
    speedup = rows["speed-up 1 -> 2 CPUs (wall), ours against datatrove's 1 -> 2 tasks"]
    assert speedup["ours"] == 80.0 / 45.0 and speedup["peer"] == 120.0 / 60.0
    memory = rows["peak memory, ours 2 CPUs / datatrove 2 tasks"]
    assert memory["ratio"] == 700.0 / 2800.0  # lower is better: < 1 means ours uses more
    assert rows["one large JSONL file: ours, speed-up 1 -> 2 CPUs"]["ours"] is None
    assert rows["load average at start (1 min)"]["ours"] == 0.5
    without_peer = {k: v for k, v in runs.items() if not k.startswith("datatrove")}
    rows = {r["measure"]: r for r in section_rows(without_peer, "datatrove")}
    assert rows["ours, 1 CPU, against datatrove 1 task"]["peer"] is None
    assert rows["ours, 1 CPU, against datatrove 1 task"]["ratio"] is None


@pytest.mark.slow
def test_crawl_quick_runs_every_row_without_shared_data(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATATROVE_PYTHON"}
    env |= {
        "LONGCAT_BENCH_CACHE": str(tmp_path / "cache"),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(ROOT),
    }
    out = tmp_path / "crawl.json"
    command = [sys.executable, "-m", "bench.crawl", "--quick", "--json", str(out),
               "--data", str(tmp_path / "none"), "--work", str(tmp_path / "work")]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert not validate(payload, "crawl")
    rows = {r["measure"]: r for r in payload["rows"]}
    assert rows["floor: bare libraries in one loop"]["ours"] > 0
    for measure in ("ours, 1 CPU, against the floor", "ours, 2 CPUs, against the floor"):
        assert rows[measure]["ours"] > 0 and rows[measure]["ratio"] > 0
    assert rows["ours, 1 CPU, against datatrove 1 task"]["peer"] is None  # not installed
    assert rows["one large JSONL file: ours, speed-up 1 -> 2 CPUs"]["ours"] > 0
    assert rows["peak memory, ours 2 CPUs / datatrove 2 tasks"]["ours"] > 0
    notes = "\n".join(payload["notes"])
    assert "from demo" in notes and "peer not installed" in notes
    # ours (both CPU counts) and the floor keep the same number of pages: same settings
    kept = [line.split("; ")[-1] for line in payload["notes"] if line.startswith("ours_")]
    assert len(kept) == 2 and kept[0] == kept[1] and kept[0].endswith("documents kept")


def test_daniel_pages_join_the_crawl_with_their_host(tmp_path: Path) -> None:
    import gzip

    from bench.crawl import add_more_pages

    folder = tmp_path / "web" / "daniel-dev" / "html"
    folder.mkdir(parents=True)
    page = b"<html><body><p>Nachrichten.</p></body></html>"
    (folder / "20111103_www.example.gr_00ab12.html.gz").write_bytes(gzip.compress(page))
    pool = Pool(origin="shared")
    add_more_pages(pool, tmp_path, debian=False)  # no Debian: nothing is downloaded
    (item,) = pool.kinds["web/daniel-dev"]
    assert item.url == "https://www.example.gr/00ab12" and item.body == page
    add_more_pages(pool, None, debian=False)  # no shared data: nothing added, no error
    assert len(pool) == 1
