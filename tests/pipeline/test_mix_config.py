"""A bad mix file fails before any work, naming the file and the key."""

from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.mix_config import ConfigError, check_against_data, load_mix, parse_tokens

REPO = Path(__file__).resolve().parents[2]

GOOD = """
schema_version: 1
seed: 3
phases:
  - name: pre
    tokens: 1.5k
    seq_len: 512
    components:
      - {name: web, weight: 0.7, domain: web, max_epochs: 2}
      - {name: code, weight: 0.3, format: code}
  - name: long
    tokens: 1k
    seq_len: 1024
    rope_theta: 5.0e6
    base: pre
    long_doc_share: 0.25
    long_doc_min_tokens: 600
"""


def _write(tmp_path: Path, text: str, name: str = "mix.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _index():
    return pa.table(
        {
            "shard": pa.array([0, 0, 0, 1], pa.int32()),
            "row": pa.array([0, 1, 2, 0], pa.int64()),
            "id": ["a", "b", "c", "d"],
            "domain": ["web", "web", "code", "books"],
            "source": ["crawl/a", "crawl/b", "code/c.py", "text/books.jsonl"],
            "language": ["en", "en", None, "en"],
            "format": ["html", "html", "code", "text"],
            "n_tokens": pa.array([700, 900, 500, 800], pa.int32()),
        }
    )


def test_good_mix_resolves_base_and_long_documents(tmp_path):
    mix = load_mix(_write(tmp_path, GOOD))
    pre, long = mix.phases
    assert (pre.budget_tokens, pre.seq_len, mix.config.seed) == (1500, 512, 3)
    shares = {c.config.name: round(c.config.weight, 6) for c in long.components}
    assert shares == {"web": 0.525, "code": 0.225, "long_docs": 0.25}
    assert long.rope_theta == 5e6
    masks = check_against_data(mix, _index())
    assert masks["long"][2].tolist() == [True, True, False, True]  # >= 600 tokens


def test_scale_shrinks_every_budget(tmp_path):
    mix = load_mix(_write(tmp_path, GOOD), scale=0.1)
    assert [p.budget_tokens for p in mix.phases] == [150, 100]


@pytest.mark.parametrize(
    ("text", "token"),
    [("20T", 20 * 10**12), ("80B", 80 * 10**9), ("500M", 500 * 10**6), ("1.5k", 1500), (42, 42)],
)
def test_budget_suffixes(text, token):
    assert parse_tokens(text) == token


BAD = [
    (GOOD + "phasess: []\n", "phasess: unknown key"),
    (GOOD.replace("max_epochs: 2", "max_epoch: 2"), "phases[0].components[0].max_epoch: unknown"),
    (GOOD.replace("weight: 0.7", "weight: 0.6"), "phases[0].components: weights"),
    (GOOD.replace("seq_len: 512", "seq_len: 0"), "phases[0].seq_len"),
    (GOOD.replace("seq_len: 512", "seq_len: 8k"), "phases[0].seq_len"),
    (GOOD.replace("seq_len: 512", "seq_len: 512.5"), "phases[0].seq_len"),
    (GOOD.replace("tokens: 1.5k", "tokens: 20X"), "phases[0].tokens"),
    (GOOD.replace("tokens: 1.5k", "tokens: -5"), "phases[0].tokens"),
    (GOOD.replace("base: pre", "base: nope"), "phases[1].base: no phase 'nope'"),
    (GOOD.replace("name: long", "name: pre"), "phases[1].name: duplicate phase"),
    (GOOD.replace("    long_doc_min_tokens: 600\n", ""), "phases[1]: long_doc_share and"),
    (GOOD.replace("long_doc_share: 0.25", "long_doc_share: 1.5"), "phases[1].long_doc_share"),
    (GOOD.replace("schema_version: 1", "schema_version: 2"), "schema_version"),
    (GOOD.replace("rope_theta: 5.0e6", "rope_theta: -1"), "phases[1].rope_theta"),
    (
        GOOD + "    components: [{name: web, weight: 0.1, domain: web}]\n",
        "phases[1]: component name 'web' used twice",
    ),
    (
        GOOD + "    components: [{name: more, weight: 0.75, domain: web}]\n",
        "with a base they must leave it a share",
    ),
    ("phases: []\n", "phases"),
    ("- a\n", "expected a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_mix_names_file_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_mix(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_circular_base_is_an_error(tmp_path):
    text = GOOD.replace(
        "    components:\n      - {name: web", "    base: long\n    components:\n      - {name: web"
    )
    with pytest.raises(ConfigError, match="circular base chain"):
        load_mix(_write(tmp_path, text))


def test_base_from_another_file(tmp_path):
    _write(tmp_path, GOOD, "pretrain.yaml")
    text = """
phases:
  - name: ctx
    tokens: 2k
    seq_len: 2048
    base: pretrain.yaml#pre
    long_doc_share: 0.5
    long_doc_min_tokens: 800
"""
    mix = load_mix(_write(tmp_path, text))
    assert [c.config.name for c in mix.phases[0].components] == ["web", "code", "long_docs"]
    assert "pretrain.yaml: phases[0].components[0] (web)" in mix.phases[0].components[0].where
    broken = text.replace("pretrain.yaml#pre", "missing.yaml#pre")
    with pytest.raises(ConfigError, match=r"missing\.yaml: file not found"):
        load_mix(_write(tmp_path, broken))


def test_scale_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="--scale"):
        load_mix(_write(tmp_path, GOOD), scale=0)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("domain: web", "domain: stem"), "phases[0].components[0] (web): selects no documents"),
        (("format: code", "language: xx"), "phases[0].components[1] (code): selects no documents"),
        (
            ("tokens: 1.5k", "tokens: 4k"),
            "(code): needs 1,200 tokens (0.3 of 4,000) but selects 1 documents with 500 tokens;"
            " max_epochs 1 allows 500",
        ),
        (("format: code", "min_quality: 0.5"), "selects by quality_score, which the tokenized"),
    ],
)
def test_mix_that_does_not_fit_the_data(tmp_path, change, expected):
    path = _write(tmp_path, GOOD.replace(*change))
    mix = load_mix(path)
    with pytest.raises(ConfigError) as info:
        check_against_data(mix, _index())
    assert str(path) in str(info.value) and expected in str(info.value)


def test_inherited_component_names_the_phase_using_it(tmp_path):
    mix = load_mix(_write(tmp_path, GOOD.replace("domain: web", "domain: stem")))
    with pytest.raises(ConfigError, match=r"\(web\), inherited by phases\[1\] \(long\): selects"):
        check_against_data(mix, _index())


def test_long_documents_that_do_not_exist(tmp_path):
    mix = load_mix(
        _write(tmp_path, GOOD.replace("long_doc_min_tokens: 600", "long_doc_min_tokens: 5000"))
    )
    with pytest.raises(ConfigError, match=r"phases\[1\].long_doc_share \(long_docs\): selects no"):
        check_against_data(mix, _index())


@pytest.mark.parametrize(
    "name", ["demo", "longcat_pretrain", "longcat_midtrain", "longcat_long_context"]
)
def test_shipped_mixes_are_valid(name):
    mix = load_mix(REPO / "mixes" / f"{name}.yaml", scale=1e-9)
    for phase in mix.phases:
        assert abs(sum(c.config.weight for c in phase.components) - 1) < 1e-9


def test_shipped_longcat_numbers():
    pretrain = load_mix(REPO / "mixes" / "longcat_pretrain.yaml").phases[0]
    assert (pretrain.budget_tokens, pretrain.seq_len) == (20 * 10**12, 8192)
    long = load_mix(REPO / "mixes" / "longcat_long_context.yaml").phases
    assert [(p.budget_tokens, p.seq_len, p.rope_theta) for p in long] == [
        (80 * 10**9, 32768, 5e6),
        (20 * 10**9, 131072, 1e7),
    ]
    for phase in long:
        shares = {c.config.name: c.config.weight for c in phase.components}
        assert shares["long_docs"] == 0.25
    for phase in load_mix(REPO / "mixes" / "longcat_midtrain.yaml").phases:
        shares = {c.config.name: c.config.weight for c in phase.components}
        assert shares["stem"] + shares["code"] == pytest.approx(0.70)
