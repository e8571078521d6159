"""Reruns notice changed input (issue 15, F8) and resume wherever the checkout lies
(F10). A shard's done marker records its input files (source, size, mtime, digest):
a rerun re-runs the shards whose files were added, removed or modified and says so,
skips a shard whose files were only touched or copied, and the run fingerprint is
made of the config's content, so the same job from another folder (a Ray job's
working directory after a cluster restart) resumes instead of being refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from pipeline import cli
from pipeline.config import load_curate_config
from pipeline.runner import run_curate

SENTENCE = "The {n}th river runs past old stone bridges and quiet farms toward the sea.\n"


def _write_doc(folder: Path, number: int, extra: str = "") -> None:
    (folder / f"doc-{number:02d}.txt").write_text(
        f"Document {number}. {extra}" + SENTENCE.format(n=number) * 4
    )


def _checkout(root: Path, out: Path, files: int = 6) -> Path:
    """A config with a relative input and an absolute output_dir, as a job would have."""
    data = root / "data"
    data.mkdir(parents=True)
    for number in range(files):
        _write_doc(data, number)
    config = root / "curate.yaml"
    config.write_text(
        f"inputs:\n  - path: data\noutput_dir: {out}\nshard_input_bytes: 700\n"
        "stages: {extract: null, langid: null, heuristics: null, domain: null}\n"
    )
    return config


def _sources(out: Path) -> list[str]:
    return sorted(pq.read_table(out / "docs", columns=["source"]).column(0).to_pylist())


def _digests(out: Path) -> dict[str, str]:
    """Every output but ``work/inputs.json``, which holds the input files' mtimes."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and str(p.relative_to(out)) != "work/inputs.json"
    }


def test_added_removed_and_modified_files_are_run_and_named(ray_session, tmp_path, capsys):
    out = tmp_path / "out"
    config = _checkout(tmp_path / "job", out)
    data = tmp_path / "job" / "data"
    first = run_curate(load_curate_config(config))
    shards = first.ledger["shards"]
    assert shards >= 3 and first.shards_run == shards
    assert _sources(out) == [f"data/doc-{n:02d}.txt" for n in range(6)]

    again = run_curate(load_curate_config(config))
    assert again.shards_run == 0 and again.input_changes == []

    _write_doc(data, 6)  # F8: a file added after the run was silently ignored
    assert cli.main(["curate", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "input changed since the last run" in printed and "added data/doc-06.txt" in printed
    assert "0 shards run" not in printed
    assert _sources(out) == [f"data/doc-{n:02d}.txt" for n in range(7)]

    _write_doc(data, 2, extra="Changed! ")
    changed = run_curate(load_curate_config(config))
    assert any("modified data/doc-02.txt" in c for c in changed.input_changes)
    text = pq.read_table(out / "docs", filters=[("source", "=", "data/doc-02.txt")])
    assert text.column("text")[0].as_py().startswith("Document 2. Changed!")

    for number in range(3, 7):
        (data / f"doc-{number:02d}.txt").unlink()
    shrunk = run_curate(load_curate_config(config))
    assert any("removed data/doc-03.txt" in c for c in shrunk.input_changes)
    assert any("no longer planned" in c for c in shrunk.input_changes)
    assert _sources(out) == [f"data/doc-{n:02d}.txt" for n in range(3)]
    assert shrunk.ledger["identity_holds"]
    assert len(list((out / "docs").glob("*.parquet"))) == shrunk.ledger["shards"]
    assert len(list((out / "stats").glob("*.json"))) == shrunk.ledger["shards"]


def test_touched_files_are_compared_by_digest_not_rerun(ray_session, tmp_path):
    out = tmp_path / "out"
    config = _checkout(tmp_path / "job", out)
    run_curate(load_curate_config(config))
    before = _digests(out)
    for path in (tmp_path / "job" / "data").iterdir():
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    again = run_curate(load_curate_config(config))
    assert again.shards_run == 0 and again.input_changes == []
    assert _digests(out) == before


def test_the_same_job_from_another_folder_resumes(ray_session, tmp_path):
    """F10: `ray job submit --working-dir .` unpacks the checkout under the Ray session's
    folder; after a head restart that path changes (and the files' mtimes with it). The
    resubmitted job must resume, not be refused as another configuration."""
    out = tmp_path / "shared" / "out"
    first_config = _checkout(tmp_path / "session_1" / "working_dir", out)
    first = run_curate(load_curate_config(first_config))
    before = _digests(out)
    moved = tmp_path / "session_2" / "working_dir"
    shutil.copytree(first_config.parent, moved, copy_function=shutil.copy)  # new mtimes
    second_config = moved / first_config.name
    assert (
        load_curate_config(second_config).fingerprint()
        == load_curate_config(first_config).fingerprint()
    )
    second = run_curate(load_curate_config(second_config))
    assert second.shards_run == 0 and second.shards_skipped == first.ledger["shards"]
    assert _digests(out) == before  # byte-identical outputs, manifest included


def test_the_fingerprint_still_sees_content_changes(tmp_path):
    config = _checkout(tmp_path / "job", tmp_path / "out")
    first = load_curate_config(config)
    config.write_text(config.read_text().replace("700", "701"))
    assert load_curate_config(config).fingerprint() != first.fingerprint()
    config.write_text(config.read_text().replace("path: data", "path: ./data/"))
    # the input spelled differently: its name (and so every document id) changes with it
    assert load_curate_config(config).fingerprint() != first.fingerprint()


def _big_jsonl(path: Path, documents: int, marker: str = "") -> None:
    lines = [
        json.dumps({"text": f"Document {n}. {marker if n == 7 else ''}" + SENTENCE.format(n=n) * 3})
        for n in range(documents)
    ]
    path.write_text("\n".join(lines) + "\n")


def test_a_split_file_reruns_only_the_shards_of_its_changed_pieces(ray_session, tmp_path):
    """Issue 18: a file cut into pieces is recorded piece by piece (the bytes each piece
    was read from, hashed as read). Touching it re-runs nothing; changing bytes inside
    one piece re-runs the shard of that piece only; growing it re-runs every shard
    holding one of its pieces."""
    out, data = tmp_path / "out", tmp_path / "job" / "data"
    data.mkdir(parents=True)
    big = data / "big.jsonl"
    _big_jsonl(big, 1_600, marker="AAAA")
    config = tmp_path / "job" / "curate.yaml"
    config.write_text(
        f"inputs:\n  - path: data\noutput_dir: {out}\nshard_input_bytes: 100000\n"
        "min_piece_bytes: 1\n"
        "stages: {extract: null, langid: null, heuristics: null, domain: null}\n"
    )
    first = run_curate(load_curate_config(config))
    shards = first.ledger["shards"]
    assert shards >= 4 and first.shards_run == shards
    before = _digests(out)

    os.utime(big, ns=(1_000_000_000, 1_000_000_000))
    touched = run_curate(load_curate_config(config))
    assert touched.shards_run == 0 and touched.input_changes == []
    assert _digests(out) == before

    _big_jsonl(big, 1_600, marker="BBBB")  # same size; document 7 lies in the first piece
    changed = run_curate(load_curate_config(config))
    assert changed.shards_run == 1
    assert changed.input_changes[0] == "modified data/big.jsonl (same size, other content)"
    texts = pq.read_table(out / "docs", columns=["text"]).column(0).to_pylist()
    assert sum("BBBB" in t for t in texts) == 1 and not any("AAAA" in t for t in texts)

    _big_jsonl(big, 1_700, marker="BBBB")
    grown = run_curate(load_curate_config(config))
    assert grown.shards_run == grown.ledger["shards"] > shards - 1
    assert grown.ledger["totals"]["input"] == 1_700
    assert _sources(out) == ["data/big.jsonl"] * 1_700
