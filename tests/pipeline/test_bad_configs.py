"""Malformed curation configs fail before Ray starts: ``python -m pipeline curate``
exits with status 2 and a message that names the file and the key.

Each case runs ``main()`` in-process with Ray start-up made to fail loudly (so reaching
it is a test failure, whatever Ray the test session already holds); a few run the real
command in a subprocess with a private, empty Ray temp dir that must stay empty.
(Mix files have their own suite.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline import cli
from tests.cluster_scripts.harness import REPO, ray_env

GOOD = """\
inputs:
  - path: data
    name: d
output_dir: out
"""


def _with(extra: str) -> str:
    return GOOD + extra


# A 500-byte "billion laughs": nine levels of nine aliases, 9**9 strings once expanded.
BILLION_LAUGHS = (
    'lol0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 9))
    + GOOD
)


# (id, config text, fragments the message must hold besides the file path)
CASES = [
    # wrong types
    ("shard-size-string", _with("shard_input_bytes: big\n"), ["shard_input_bytes"]),
    ("shard-size-bool", _with("shard_input_bytes: true\n"), ["shard_input_bytes"]),
    ("shard-size-fraction", _with("shard_input_bytes: 1.5\n"), ["shard_input_bytes"]),
    ("inputs-not-a-list", "inputs: data\noutput_dir: out\n", ["inputs"]),
    ("input-path-number", "inputs:\n  - path: 5\noutput_dir: out\n", ["inputs[0].path"]),
    ("max-doc-bytes-unit", _with("reader: {max_doc_bytes: 10MB}\n"), ["reader.max_doc_bytes"]),
    ("languages-not-a-list", _with("stages: {langid: {languages: en}}\n"), ["langid.languages"]),
    ("min-score-word", _with("stages: {langid: {min_score: high}}\n"), ["langid.min_score"]),
    ("stages-a-list", _with("stages: [extract]\n"), ["stages"]),
    ("reader-null", _with("reader: null\n"), ["reader"]),
    # unknown keys
    ("unknown-top-key", _with("outptu_dir: x\n"), ["outptu_dir", "unknown key"]),
    ("unknown-input-key", GOOD.replace("name:", "nmae:"), ["inputs[0].nmae", "unknown key"]),
    ("unknown-reader-key", _with("reader: {txt_field: body}\n"), ["reader.txt_field"]),
    ("unknown-stage", _with("stages: {extrct: {}}\n"), ["stages.extrct", "unknown key"]),
    ("unknown-stage-key", _with("stages: {langid: {min_scor: 1}}\n"), ["langid.min_scor"]),
    ("unknown-ray-key", _with("ray: {num_cpu: 2}\n"), ["ray.num_cpu", "unknown key"]),
    ("unknown-preset", _with("stages: {heuristics: {presets: [gopher_qualty]}}\n"),
     ["stages.heuristics.presets", "gopher_qualty"]),
    ("unknown-rule", _with("stages: {heuristics: {overrides: {c4: {no_such_rule: 3}}}}\n"),
     ["stages.heuristics", "no_such_rule"]),
    # values out of range
    ("shard-size-zero", _with("shard_input_bytes: 0\n"), ["shard_input_bytes", "greater than 0"]),
    ("shard-size-negative", _with("shard_input_bytes: -5\n"), ["shard_input_bytes"]),
    ("max-doc-bytes-zero", _with("reader: {max_doc_bytes: 0}\n"), ["reader.max_doc_bytes"]),
    ("bomb-ratio-below-1", _with("reader: {max_decompressed_ratio: 0.5}\n"),
     ["reader.max_decompressed_ratio"]),
    ("min-score-negative", _with("stages: {langid: {min_score: -0.1}}\n"), ["langid.min_score"]),
    ("min-score-above-1", _with("stages: {langid: {min_score: 1.5}}\n"), ["langid.min_score"]),
    ("timeout-negative", _with("stages: {extract: {timeout_seconds: -1}}\n"),
     ["stages.extract", "timeout_seconds"]),
    ("num-cpus-negative", _with("ray: {num_cpus: -2}\n"), ["ray.num_cpus"]),
    ("num-cpus-zero", _with("ray: {num_cpus: 0}\n"), ["ray.num_cpus"]),
    ("object-store-tiny", _with("ray: {object_store_memory_bytes: 1000}\n"),
     ["ray.object_store_memory_bytes"]),
    # missing things
    ("inputs-missing", "output_dir: out\n", ["inputs", "Field required"]),
    ("inputs-empty", "inputs: []\noutput_dir: out\n", ["inputs"]),
    ("input-without-path", "inputs:\n  - name: d\noutput_dir: out\n", ["inputs[0].path"]),
    ("output-dir-missing", "inputs:\n  - path: data\n", ["output_dir", "Field required"]),
    ("output-dir-empty", GOOD.replace("output_dir: out", "output_dir: ''"), ["output_dir"]),
    ("input-path-missing", GOOD.replace("path: data", "path: nowhere"),
     ["inputs[0].path", "nowhere", "does not exist"]),
    ("input-glob-matches-nothing", GOOD.replace("path: data", "path: data/*.warc.gz"),
     ["inputs[0].path", "no readable files"]),
    ("output-dir-is-a-file", GOOD.replace("output_dir: out", "output_dir: config.yaml"),
     ["output_dir", "cannot write"]),
    # YAML that must not load
    ("python-tag-top", "!!python/object/apply:os.system ['true']\n", ["safe_load refuses"]),
    ("python-tag-nested", _with("reader: !!python/object:collections.OrderedDict {}\n"),
     ["safe_load refuses", "reader"]),
    ("python-name-tag", _with("stages: {extract: {timeout_seconds: !!python/name:os.system }}\n"),
     ["safe_load refuses", "timeout_seconds"]),
    ("local-tag", _with("shard_input_bytes: !shards 5\n"), ["!shards", "shard_input_bytes"]),
    ("duplicate-key", _with("output_dir: elsewhere\n"), ["duplicate key 'output_dir'"]),
    ("syntax-error", "inputs: [\n", ["not valid YAML"]),
    ("top-level-list", "- a\n- b\n", ["expected a mapping"]),
    ("empty-file", "", ["expected a mapping"]),
    # bounded loading (issue 15, F5 / F6): each a clean exit 2 naming the key
    ("billion-laughs", BILLION_LAUGHS, ["lol0", "anchors and aliases are refused"]),
    ("alias", _with("reader: {text_field: &t body, id_field: *t}\n"),
     ["reader.text_field", "anchors and aliases are refused"]),
    ("deep-nesting", _with("reader: " + "[" * 5000 + "]" * 5000 + "\n"),
     ["reader[0][0]", "nesting deeper than 64"]),
    ("huge-integer", _with("shard_input_bytes: " + "9" * 5000 + "\n"),
     ["shard_input_bytes", "integer of 5000 digits"]),
    ("binary-tag", _with("reader: {text_field: !!binary aGVsbG8=}\n"),
     ["reader.text_field", "tag:yaml.org,2002:binary is refused"]),
    ("set-tag", _with("stages: {langid: {languages: !!set {en: null}}}\n"),
     ["stages.langid.languages", "tag:yaml.org,2002:set is refused"]),
    ("timestamp", _with("reader: {text_field: 2024-01-01}\n"),
     ["reader.text_field", "timestamp is refused", "quote a value"]),
    ("ftp-input", GOOD.replace("path: data", "path: ftp://host/crawl"),
     ["inputs[0].path", "ftp:// is not a filesystem"]),
    ("http-output", GOOD.replace("output_dir: out", "output_dir: http://host/out"),
     ["output_dir", "http:// is not a filesystem"]),
    ("output-in-etc", GOOD.replace("output_dir: out", "output_dir: /etc/curated"),
     ["output_dir", "system folder /etc", "allow_system_output_dir"]),
    ("output-is-input", GOOD.replace("output_dir: out", "output_dir: data"),
     ["output_dir", "same folder as inputs[0].path"]),
]  # fmt: skip


def _write_case(tmp_path, text: str):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("hello, this is a text file\n")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def ray_must_not_start(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for an invalid configuration")

    monkeypatch.setattr("pipeline.runner.init_ray", refuse)
    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_fails_before_ray_naming_file_and_key(
    ray_must_not_start, tmp_path, capsys, text, fragments
):
    path = _write_case(tmp_path, text)
    assert cli.main(["curate", str(path)]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"error: {path}")
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("absent", ["file not found"]),
        ("directory", ["cannot read"]),
        ("latin-1", ["cannot read"]),
    ],
)
def test_unreadable_config_file(ray_must_not_start, tmp_path, capsys, case, fragments):
    path = tmp_path / "config.yaml"
    if case == "directory":
        path.mkdir()
    elif case == "latin-1":
        path.write_bytes((GOOD + "# caf\xe9 (latin-1, not UTF-8)\n").encode("latin-1"))
    assert cli.main(["curate", str(path)]) == 2
    message = capsys.readouterr().err
    assert str(path) in message and all(f in message for f in fragments), message


@pytest.mark.parametrize(
    "case",
    [
        "shard-size-bool", "input-path-missing", "python-tag-top", "num-cpus-zero",
        "billion-laughs", "deep-nesting", "huge-integer", "ftp-input",
    ],
)  # fmt: skip
def test_real_command_exits_2_and_leaves_ray_alone(tmp_path, case):
    text, fragments = next(c[1:] for c in CASES if c[0] == case)
    path = _write_case(tmp_path, text)
    ray_tmp = tmp_path / "ray-tmp"
    ray_tmp.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "curate", str(path)],
        cwd=REPO,
        env=ray_env(RAY_TMPDIR=str(ray_tmp)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert str(path) in run.stderr and all(f in run.stderr for f in fragments), run.stderr
    assert "Started a local Ray instance" not in run.stdout + run.stderr
    assert not any(ray_tmp.iterdir()), "Ray wrote its session files: it started"
