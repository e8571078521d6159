"""The console a user sees: Ctrl-C ends a command with one line saying a rerun resumes
(and the rerun does), and ``python -m pipeline schema ...`` prints each config's keys
with their defaults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.cli import INTERRUPTED
from pipeline.schema_cmd import SCHEMAS, schema_model

REPO = Path(__file__).resolve().parents[2]
ENV = os.environ | {
    "PYTHONPATH": str(REPO),
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "PIPELINE_PROGRESS": "0",
}


def _schema(kind: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "schema", kind],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_schema_prints_every_key_with_its_default(kind: str) -> None:
    text = _schema(kind)
    parsed = yaml.safe_load(text)  # the schema is itself YAML
    model = schema_model(kind)
    assert set(parsed) == set(model.model_fields)  # every top-level key, nothing else
    for name, field in model.model_fields.items():  # plain keys show their default
        if not field.is_required() and not isinstance(parsed[name], dict | list):
            want = field.get_default(call_default_factory=True)
            assert parsed[name] == want or str(parsed[name]) == str(want), name
    assert "unknown keys are errors" in text.splitlines()[0]


def test_schema_expands_sections_and_marks_switchable_stages() -> None:
    curate = yaml.safe_load(_schema("curate"))
    assert curate["reader"]["text_field"] == "text"
    assert curate["stages"]["langid"]["min_score"] == 0.65
    assert curate["stages"]["quality"] is None  # off by default: its keys commented
    text = _schema("curate")
    assert re.search(r"^  quality:  # null by default \(off\); when set:", text, re.M)
    assert re.search(r"^    # model_path: <required>", text, re.M)
    assert re.search(r"^  extract:  # null switches it off", text, re.M)
    mix = yaml.safe_load(_schema("mix"))
    assert mix["packing"]["window_sequences"] == 1024
    assert mix["phases"][0]["components"][0]["max_epochs"] == 1.0


def _curate_config(root: Path, files: int) -> Path:
    corpus = root / "corpus"
    corpus.mkdir()
    for number in range(files):
        lines = [json.dumps({"text": f"File {number}, document {i}. " * 40}) for i in range(30)]
        (corpus / f"part-{number:03d}.jsonl").write_text("\n".join(lines) + "\n")
    config = root / "curate.yaml"
    config.write_text(
        "inputs: [{path: corpus/*.jsonl, name: text}]\noutput_dir: curated\n"
        "shard_input_bytes: 1\n"
        "stages: {extract: null, langid: null, heuristics: null, domain: null}\n"
        "ray: {num_cpus: 2}\n"
    )
    return config


@pytest.mark.slow
def test_ctrl_c_says_a_rerun_resumes_and_it_does(tmp_path: Path) -> None:
    config = _curate_config(tmp_path, files=60)
    command = [sys.executable, "-m", "pipeline", "curate", str(config)]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    markers = tmp_path / "curated" / "work" / "documents"
    deadline = time.monotonic() + 300
    while not any(markers.glob("*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no shard finished in 300 s"
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == INTERRUPTED
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    assert not (tmp_path / "curated" / "ledger.json").exists()
    rerun = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    planned = re.search(r"(\d+) to run, (\d+) already done", rerun.stderr)
    assert planned and int(planned[2]) >= 1, rerun.stderr[-3000:]
    rate = (
        r"documents pass: (\d+) shards, (\d+) documents read, \d+ kept in [\d.]+ s "
        r"\([\d.]+ documents/s\)"
    )
    progress = re.search(rate, rerun.stderr)  # the pass's documents and rate
    assert progress and int(progress[2]) == 30 * int(progress[1]) == 30 * int(planned[1])
    ledger = json.loads((tmp_path / "curated" / "ledger.json").read_text())
    assert ledger["identity_holds"] and ledger["totals"]["input"] == 60 * 30
    # Ray's INFO lines and its native ERROR line stay off a console without -v
    assert "started a local Ray" in rerun.stderr, rerun.stderr[-3000:]
    noise = re.findall(r"^.*(?:\tINFO |\] core_worker\.cc).*$", rerun.stderr, re.M)
    assert not noise, noise[:3]


def test_native_stderr_filter_drops_only_the_known_ray_line() -> None:
    noise = (
        "[2026-12-07 17:04:30,065 E 6586 6586] core_worker.cc:2465: Actor with class name: "
        "'MapWorker(MapBatches(DocumentPass))' and ID: 'ab' has constructor arguments in the "
        "object store and max_restarts > 0. If the arguments in the object store go out of "
        "scope or are lost, the actor restart will fail."
    )
    code = f"""
import os, sys
from pipeline.console import filtered_native_stderr
with filtered_native_stderr():
    os.write(2, b"first line\\n" + {noise.encode()!r} + b"\\n")
    print("from python", file=sys.stderr)
    os.write(2, b"[x E 1 1] core_worker.cc:1: another native error\\nno newline")
print("after", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "first line\nfrom python\n[x E 1 1] core_worker.cc:1: another native error\n"
        "no newlineafter\n"
    )


def test_a_refused_output_dir_names_the_keys_that_differ(tmp_path: Path) -> None:
    from pipeline.config import ConfigError, load_curate_config
    from pipeline.runner import RunLayout, _claim_output_dir, config_differences

    path = _curate_config(tmp_path, files=1)
    first = load_curate_config(path)
    layout = RunLayout.for_output(first.output_dir)
    _claim_output_dir(layout, first, overwrite=False)
    text = path.read_text().replace("shard_input_bytes: 1", "shard_input_bytes: 2")
    path.write_text(text.replace("langid: null", "langid: {min_score: 0.5}"))
    second = load_curate_config(path)
    with pytest.raises(ConfigError) as refused:
        _claim_output_dir(layout, second, overwrite=False)
    message = str(refused.value)
    assert "shard_input_bytes: 1 -> 2" in message
    assert "stages.langid: null -> {" in message
    assert config_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ["a.c: 2 -> 3"]
    _claim_output_dir(layout, second, overwrite=True)  # --overwrite takes the folder
