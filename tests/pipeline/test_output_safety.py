"""The output folder can never overlap an input, and ``--overwrite`` deletes only what
this project wrote (issue 15, F7: an output_dir equal to the input folder plus
``--overwrite`` deleted the corpus).

Each test builds its own corpus and tries, in one way or another, to make a run delete
or overwrite an input; the input's bytes are compared before and after."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import ConfigError, CurateConfig, load_curate_config
from pipeline.curate import RunLayout
from pipeline.runner import _claim_output_dir, run_curate
from pipeline.safe_paths import system_folder_problem

TEXT = "A plain English sentence about rivers, mountains and the weather in spring.\n" * 6


def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(3):
        (folder / f"doc-{number}.txt").write_text(f"Document {number}. {TEXT}")
    (folder / "notes.md").write_text("The user's own notes. " * 10)
    return folder


def _digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _config_text(input_path: str, output_dir: str, extra: str = "") -> str:
    return (
        f"inputs:\n  - path: {input_path}\n    name: data\noutput_dir: {output_dir}\n"
        "stages: {extract: null, langid: null, heuristics: null, domain: null}\n" + extra
    )


@pytest.fixture
def ray_must_not_start(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for a configuration that must be refused")

    monkeypatch.setattr("pipeline.runner.init_ray", refuse)
    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize(
    ("input_path", "output_dir", "expected"),
    [
        ("data", "data", "is the same folder as inputs[0].path"),
        ("data", "data/", "is the same folder as inputs[0].path"),
        ("data", "./data/../data", "is the same folder as inputs[0].path"),
        ("data/*.txt", "data", "is the same folder as inputs[0].path"),
        ("data", "data/curated", "lies inside inputs[0].path"),
        ("data/doc-0.txt", "data/doc-0.txt", "is the same folder as inputs[0].path"),
        ("data", "data-link", "is the same folder as inputs[0].path"),  # a symlink to it
        ("out/data", "out", "lies inside output_dir"),
        ("data", ".", "lies inside output_dir"),
    ],
)
def test_output_overlapping_an_input_exits_2_naming_file_and_key(
    ray_must_not_start, tmp_path, capsys, input_path, output_dir, expected
):
    _corpus(tmp_path / "data")
    _corpus(tmp_path / "out" / "data")
    (tmp_path / "data-link").symlink_to(tmp_path / "data")
    before = _digest_tree(tmp_path / "data")
    config = tmp_path / "config.yaml"
    config.write_text(_config_text(input_path, output_dir))
    assert cli.main(["curate", str(config), "--overwrite"]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"error: {config}: output_dir: ")
    assert expected in message, message
    assert _digest_tree(tmp_path / "data") == before


def test_library_callers_are_refused_too(ray_must_not_start, tmp_path):
    """run_curate checks again: a config built in code never skips the check."""
    data = _corpus(tmp_path / "data")
    before = _digest_tree(data)
    config = CurateConfig.model_validate(
        {"inputs": [{"path": str(data), "name": "d"}], "output_dir": str(data)}
    )
    with pytest.raises(ConfigError, match="is the same folder"):
        run_curate(config, overwrite=True)
    assert _digest_tree(data) == before


@pytest.mark.parametrize(
    "output_dir",
    ["/etc/curated", "/usr/local/share/curated", "/proc/self", "/dev/shm/x", "/boot", "/sys"],
)
def test_system_folders_are_refused_unless_explicit(tmp_path, output_dir):
    _corpus(tmp_path / "data")
    config = tmp_path / "config.yaml"
    config.write_text(_config_text("data", output_dir))
    with pytest.raises(ConfigError, match=r"output_dir: .*(system folder|filesystem root)"):
        load_curate_config(config)
    config.write_text(_config_text("data", output_dir, "allow_system_output_dir: true\n"))
    assert load_curate_config(config).output_dir == output_dir


def test_the_filesystem_root_is_a_system_folder():
    assert "filesystem root" in system_folder_problem("/")
    assert "filesystem root" in system_folder_problem("file:///")
    assert system_folder_problem("/tmp/curated") is None
    assert system_folder_problem("s3://bucket/etc") is None


def _previous_run(out: Path) -> dict[str, bytes]:
    """A folder as a curation run of another configuration leaves it, plus the user's own
    files beside and inside the project's folders, and links pointing at an input."""
    owned = {
        "run.json": b'{"config_fingerprint": "0000000000000000"}',
        "ledger.json": b"{}",
        "manifest.json": b"{}",
        "funnel.txt": b"funnel",
        "docs/shard-00000.parquet": b"PAR1",
        "rejects/documents-00000.parquet": b"PAR1",
        "rejects/exact_dedup-00003.parquet": b"PAR1",
        "stats/00000.json": b"{}",
        "work/documents/00000.parquet": b"PAR1",
        "work/documents/00000.json": b"{}",
        "work/exact_dedup/0123456789abcdef/00000.parquet": b"PAR1",
        "work/exact_dedup/0123456789abcdef/_SUCCESS": b"{}",
        f"docs/.shard-00001.parquet.tmp-{'ab' * 16}": b"PAR",
    }
    for relative, data in owned.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
    return owned


def test_overwrite_deletes_only_what_a_run_wrote(tmp_path):
    data = _corpus(tmp_path / "data")
    out = tmp_path / "out"
    owned = _previous_run(out)
    foreign = {
        "README.txt": b"the user's note",
        "docs/my-analysis.parquet": b"user data",
        "docs/shard-00000.parquet.bak": b"user backup",
        "work/documents/keep.json": b"user data",
        "stats/summary.csv": b"user data",
    }
    for relative, payload in foreign.items():
        (out / relative).write_bytes(payload)
    (out / "linked-input").symlink_to(data)  # a folder link: never followed
    (out / "work" / "exact_dedup" / "0123456789abcdef" / "00001.parquet").symlink_to(
        data / "doc-0.txt"
    )  # a file link under an owned name: never deleted, nor what it points at
    before = _digest_tree(data)
    config = CurateConfig.model_validate(
        {"inputs": [{"path": str(data), "name": "d"}], "output_dir": str(out)}
    )
    with pytest.raises(ConfigError, match="--overwrite"):
        _claim_output_dir(RunLayout.for_output(str(out)), config, overwrite=False)
    assert all((out / relative).exists() for relative in owned)

    _claim_output_dir(RunLayout.for_output(str(out)), config, overwrite=True)
    assert _digest_tree(data) == before
    for relative, payload in foreign.items():
        assert (out / relative).read_bytes() == payload, relative
    assert (out / "linked-input").is_symlink()
    assert (out / "work" / "exact_dedup" / "0123456789abcdef" / "00001.parquet").is_symlink()
    left = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() or p.is_symlink()}
    assert not left & (set(owned) - {"run.json"})
    assert "config_fingerprint" in (out / "run.json").read_text()  # the new run's claim
    assert config.fingerprint() in (out / "run.json").read_text()


def test_owned_names_are_exactly_the_run_layout():
    layout = RunLayout.for_output("/o")
    written = [
        layout.docs(7), layout.stats(7), layout.work_documents(7), layout.work_stats(7),
        layout.rejects("documents", 7), layout.rejects("minhash_dedup", 7),
        layout.decision("template_lines", "fedcba9876543210", 7),
        layout.path("run.json"), layout.path("ledger.json"),
    ]  # fmt: skip
    for path in written:
        assert RunLayout.owns(os.path.relpath(path, "/o")), path
    foreign = [
        "data.txt", "docs/a.txt", "../docs/shard-00000.parquet", "docs/shard-1.parquet",
        "work/x/short/00000.parquet", "rejects/Documents-00000.parquet",
    ]  # fmt: skip
    for relative in foreign:
        assert not RunLayout.owns(relative), relative


def test_rerun_with_another_config_and_overwrite_keeps_the_input(ray_session, tmp_path):
    """The F7 sequence end to end, with the input next to (not inside) the output: run,
    change the config, rerun with --overwrite. The corpus and a user's file in the output
    folder survive; the run's own files are replaced."""
    data = _corpus(tmp_path / "data")
    before = _digest_tree(data)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(_config_text("data", "out"))
    first = run_curate(load_curate_config(config_path))
    assert first.ledger["identity_holds"]
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    config_path.write_text(_config_text("data", "out", "shard_input_bytes: 100\n"))
    with pytest.raises(ConfigError, match="another configuration"):
        run_curate(load_curate_config(config_path))
    second = run_curate(load_curate_config(config_path), overwrite=True)
    assert second.ledger["identity_holds"] and second.ledger["shards"] == 4
    assert _digest_tree(data) == before
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_tokenize_and_train_quality_outputs_are_checked_too(tmp_path):
    from pipeline.tokenizing import load_tokenize_config
    from pipeline.train_quality import load_train_config

    (tmp_path / "curated").mkdir()
    tokenize = tmp_path / "tokenize.yaml"
    tokenize.write_text(
        "curated_dir: curated\noutput_dir: curated/tokenized\n"
        "tokenizer: {tokenizer_path: tokenizer.json}\n"
    )
    with pytest.raises(ConfigError, match=r"tokenize.yaml: output_dir: .* inside curated_dir"):
        load_tokenize_config(tokenize)
    _corpus(tmp_path / "good")
    _corpus(tmp_path / "crawl")
    quality = tmp_path / "quality.yaml"
    quality.write_text(
        "positive: [{path: good, name: good}]\nnegative: [{path: crawl, name: crawl}]\n"
        "output_dir: crawl\n"
    )
    with pytest.raises(ConfigError, match=r"output_dir: .* same folder as negative\[0\]"):
        load_train_config(quality)
