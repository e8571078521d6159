"""Settings of how a curation run executes, not of what it writes (``RUN_SETTINGS``):

- the outputs are byte-identical at 1 and 2 CPUs, global steps included, so changing
  ``ray`` between a run and its rerun resumes the run instead of refusing it. One CPU
  embedded runs in-process (``ray.executor: auto``), so this also compares the
  in-process executor with Ray, and resumes across the two both ways;
- more failed documents (``error:`` reasons) than ``max_error_share`` allows make
  ``curate`` exit 3 with the commonest failures named, after writing the outputs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import RUN_SETTINGS, ConfigError, CurateConfig, load_curate_config
from pipeline.runner import run_curate
from tests.cluster_scripts.harness import REPO
from tests.pipeline.demo_configs import global_steps_config


def _digests(folder: Path) -> dict[str, str]:
    """Digest of every file a user reads: documents, rejects and the ledger."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for sub in ("docs", "rejects")
        for path in sorted((folder / sub).rglob("*"))
        if path.is_file()
    } | {"ledger.json": hashlib.sha256((folder / "ledger.json").read_bytes()).hexdigest()}


def test_run_settings_are_config_keys():
    assert set(CurateConfig.model_fields) >= RUN_SETTINGS


def test_one_and_two_cpus_write_the_same_bytes_and_a_rerun_with_other_cpus_resumes(
    ray_session, demo_corpus, tmp_path, caplog
):
    one_cpu = tmp_path / "one.yaml"
    one_cpu.write_text(global_steps_config(demo_corpus, "one", "{num_cpus: 1}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PIPELINE_PROGRESS="0")
    done = subprocess.run(  # a fresh process: its own embedded Ray with one CPU
        [sys.executable, "-m", "pipeline", "curate", str(one_cpu)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # One CPU, embedded: the in-process executor (auto), no Ray started.
    assert "ray: not started; the run executes in this process (ray.executor: auto)" in (
        done.stderr
    )
    assert "started a local Ray" not in done.stderr

    two_cpus = tmp_path / "two.yaml"
    two_cpus.write_text(global_steps_config(demo_corpus, "two", "{num_cpus: 2}"))
    result = run_curate(load_curate_config(two_cpus))  # the suite's 2-CPU session
    assert result.ledger["identity_holds"]
    dropped = result.ledger["stages"]
    assert sum(dropped["exact_dedup"]["rejected"].values()) > 0  # the steps did decide
    assert sum(dropped["minhash_dedup"]["rejected"].values()) > 0
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")

    # The run done at 1 CPU (in-process), resumed with 2 (Ray): the same run, nothing to
    # do again.
    one_cpu.write_text(global_steps_config(demo_corpus, "one", "{num_cpus: 2}"))
    before = _digests(tmp_path / "one")
    again = run_curate(load_curate_config(one_cpu))
    assert again.shards_run == 0 and again.shards_skipped == result.ledger["shards"]
    assert _digests(tmp_path / "one") == before

    # The run done on Ray, with a shard's documents-pass marker and every final shard
    # lost, resumed in-process (1 CPU, auto): that shard and the finalize pass run in
    # this process and write the same bytes.
    two = tmp_path / "two"
    (two / "work" / "documents" / "00000.json").unlink()
    for path in (*(two / "stats").iterdir(), *(two / "docs").iterdir()):
        path.unlink()
    two_cpus.write_text(global_steps_config(demo_corpus, "two", "{num_cpus: 1}"))
    with caplog.at_level(logging.INFO, logger="pipeline"):
        resumed = run_curate(load_curate_config(two_cpus))
    assert "ray: not started; the run executes in this process" in caplog.text
    assert resumed.shards_run == 1
    assert _digests(two) == before


def _failing_corpus(folder: Path, slow_pages: int, articles: int) -> None:
    """``slow_pages`` HTML pages no extractor finishes within the test's limit, and
    ``articles`` plain-text articles that need no extraction."""
    folder.mkdir()
    body = "".join(
        f"<div><p>Paragraph {i} is about rivers, bridges and the weather in town.</p>"
        f"<a href='/x{i}'>link {i}</a></div>"
        for i in range(8000)
    )
    for number in range(slow_pages):
        (folder / f"slow-{number}.html").write_text(f"<html><body>{body}</body></html>")
    for number in range(articles):
        (folder / f"article-{number}.txt").write_text(
            f"Article {number} tells how the river town rebuilt its old bridge. " * 12
        )


def _error_config(path: Path, data: Path, extra: str = "") -> None:
    path.write_text(
        f"inputs: [{{path: {data}}}]\noutput_dir: out\n"
        "stages: {extract: {timeout_seconds: 0.05}, langid: null, heuristics: null,"
        " domain: null}\n" + extra
    )


def test_too_many_failed_documents_exit_3_naming_them(ray_session, tmp_path, capsys):
    _failing_corpus(tmp_path / "data", slow_pages=2, articles=8)
    config = tmp_path / "curate.yaml"
    _error_config(config, tmp_path / "data")
    assert cli.main(["curate", str(config)]) == 3
    err = capsys.readouterr().err
    assert "2 of 10 documents failed in a stage (20.00%, above max_error_share 1.00%)" in err
    assert "extract: error:extract_timeout (2)" in err
    assert (tmp_path / "out" / "ledger.json").is_file()  # the outputs are written

    # Allowing more failures changes nothing written: the rerun resumes and passes.
    _error_config(config, tmp_path / "data", "max_error_share: 0.25\n")
    assert cli.main(["curate", str(config)]) == 0
    assert run_curate(load_curate_config(config)).shards_run == 0


@pytest.mark.parametrize(("errors", "limit", "fails"), [(0, 0.0, False), (1, 0.0, True),
                         (1, 0.01, False), (2, 0.01, True)])  # fmt: skip
def test_the_error_share_is_compared_with_the_input(errors, limit, fails):
    from pipeline.flow import failed_documents_problem

    ledger = {
        "totals": {"input": 100, "kept": 100 - errors, "rejected": 0, "errors": errors},
        "stages": {"extract": {"errors": {"error:extract_timeout": errors} if errors else {}}},
    }
    assert (failed_documents_problem(ledger, limit) is not None) is fails


def test_a_refusal_names_only_the_keys_that_differ(ray_session, tmp_path):
    """Relative paths are compared as written (``./out``), and run settings not at all."""
    _failing_corpus(tmp_path / "data", slow_pages=0, articles=3)
    config = tmp_path / "curate.yaml"
    _error_config(config, tmp_path / "data")
    run_curate(load_curate_config(config))
    _error_config(config, tmp_path / "data", "max_error_share: 0.5\nray: {num_cpus: 1}\n")
    text = (config.read_text()).replace("timeout_seconds: 0.05", "timeout_seconds: 0.1")
    config.write_text(text)
    with pytest.raises(ConfigError) as refused:
        run_curate(load_curate_config(config))
    assert "(differs in stages.extract.timeout_seconds: 0.05 -> 0.1)" in str(refused.value)


def test_a_folder_of_another_version_is_named_as_such(ray_session, tmp_path):
    """A run.json whose fingerprint was computed another way (an older version of this
    project) with the same settings: the refusal says so, instead of naming no key."""
    import json

    _failing_corpus(tmp_path / "data", slow_pages=0, articles=2)
    config = tmp_path / "curate.yaml"
    _error_config(config, tmp_path / "data")
    run_curate(load_curate_config(config))
    run_file = tmp_path / "out" / "run.json"
    stored = json.loads(run_file.read_text())
    run_file.write_text(json.dumps(stored | {"config_fingerprint": "0" * 16}))
    with pytest.raises(ConfigError, match="the same settings, fingerprinted by another version"):
        run_curate(load_curate_config(config))


def test_the_extract_limit_holds_in_process(ray_session, tmp_path, caplog):
    """In-process (one CPU, ``ray.executor: auto``) the documents pass runs on the
    driver's main thread, where the extract stage's CPU-time limit is a signal: the slow
    pages fail as they do on Ray's workers, and the command exits 3 the same way."""
    _failing_corpus(tmp_path / "data", slow_pages=2, articles=8)
    config = tmp_path / "curate.yaml"
    _error_config(config, tmp_path / "data", "ray: {num_cpus: 1}\n")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert cli.main(["curate", str(config)]) == 3
    assert "ray: not started; the run executes in this process" in caplog.text
    ledger = Path(load_curate_config(config).output_dir) / "ledger.json"
    stages = json.loads(ledger.read_text())["stages"]
    assert stages["extract"]["errors"] == {"error:extract_timeout": 2}
