"""A bad config fails before Ray starts, with the file, the key and the expectation."""

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_curate_config
from pipeline.runner import plan

GOOD = """
inputs:
  - path: data
output_dir: out
stages:
  langid: {languages: [en], min_score: 0.5}
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "a.txt").write_text("hello")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_good_config_resolves_paths_against_its_folder(tmp_path):
    config = load_curate_config(_write(tmp_path, GOOD))
    assert config.inputs[0].path == str(tmp_path / "data")
    assert config.output_dir == str(tmp_path / "out")
    assert config.stages.langid.languages == ["en"]
    assert len(plan(config)) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "outptu_dir: x\n", "outptu_dir: unknown key"),
        (GOOD.replace("min_score: 0.5", "min_score: high"), "stages.langid.min_score"),
        (GOOD.replace("[en]", "english"), "stages.langid.languages"),
        (GOOD + "shard_input_bytes: -1\n", "shard_input_bytes"),
        ("inputs: []\noutput_dir: out\n", "inputs"),
        ("output_dir: out\n", "inputs: Field required"),
        (GOOD.replace("langid:", "extrct: {}\n  langid:"), "stages.extrct: unknown key"),
        (GOOD + "stages:\n  extract: {}\n", "duplicate"),
        ("!!python/object/apply:os.system ['true']\n", "safe_load refuses"),
        ("inputs: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_curate_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_input_path_fails_at_planning(tmp_path):
    config = load_curate_config(
        _write(tmp_path, GOOD.replace("path: data", "path: nowhere/*.warc"))
    )
    with pytest.raises(ConfigError, match="nowhere"):
        plan(config)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_curate_config(tmp_path / "absent.yaml")


def test_eval_file_digest_enters_the_fingerprint(tmp_path):
    """A changed evaluation set must not resume on decisions made against the old one."""
    eval_file = tmp_path / "bench.jsonl"
    eval_file.write_text('{"text": "one two three"}\n')
    text = GOOD + "  decontaminate:\n    eval_files:\n      - {path: bench.jsonl, name: bench}\n"
    path = _write(tmp_path, text)
    first = load_curate_config(path)
    spec = first.stages.decontaminate.eval_files[0]
    assert spec.path == str(eval_file) and len(spec.sha256) == 64
    eval_file.write_text('{"text": "one two four"}\n')
    assert load_curate_config(path).fingerprint() != first.fingerprint()
    pinned = text.replace("name: bench}", f"name: bench, sha256: {spec.sha256}}}")
    with pytest.raises(ConfigError, match=r"eval_files\[0\]\.sha256"):
        load_curate_config(_write(tmp_path, pinned))
