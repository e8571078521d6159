"""train-quality end to end on a tiny labelled set made here: the CLI trains, reports
held-out precision/recall, writes the model, its JSON and the fluency LM, and a curate
config that names them loads (paths resolved, digests recorded) or fails naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, load_curate_config
from pipeline.train_quality import cut_examples, load_train_config, precision_recall
from stages.fluency import Fluency, FluencyConfig
from stages.quality import QUALITY_SCORE, Quality, QualityConfig
from tests.quality_data import SCIENCE, SPAM, write_labelled_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    config = write_labelled_set(tmp_path_factory.mktemp("labelled"))
    assert main(["train-quality", str(config)]) == 0
    model_dir = config.parent / "model"
    return model_dir, json.loads((model_dir / "quality.json").read_text())


def test_cli_writes_model_lm_and_report(trained, capsys) -> None:
    model_dir, report = trained
    assert (model_dir / "quality.bin").stat().st_size < 2_000_000  # small bucket: small model
    assert (model_dir / "fluency_lm.npz").is_file()
    assert (model_dir / "fluency_words.npz").is_file()
    assert report["documents"] == {"positive": 30, "negative": 36}  # 30 JSONL + 6 HTML pages
    held = report["examples"]["heldout"]
    assert held["positive"] > 0 and held["negative"] > 0
    (row,) = report["heldout"]
    assert row["threshold"] == 0.5
    assert row["precision"] >= 0.9 and row["recall"] >= 0.9  # the classes barely overlap
    assert report["config"]["fasttext"]["bucket"] == 2000
    assert set(report["files"]) == {"quality.bin", "fluency_lm.npz", "fluency_words.npz"}
    medians = report["fluency_lm"]["heldout_median_perplexity"]
    assert medians["positive"] < medians["negative"]
    gains = report["word_order"]["heldout_median_gain"]
    assert gains["positive"] > 0.0 > gains["shuffled_positive"]  # word order carries sense


def test_trained_model_drives_the_stages(trained) -> None:
    model_dir, _ = trained
    quality = Quality(QualityConfig(model_path=str(model_dir / "quality.bin"), max_chars=600))
    texts = [" ".join(SCIENCE[:4]), " ".join(SPAM[:4])]
    out = quality(pa.table({"text": texts, "format": ["text", "html"]}))
    good, spam = out.column(QUALITY_SCORE).to_pylist()
    assert good > 0.5 > spam
    assert out.column("drop_reason").to_pylist() == [None, "quality_below_min"]
    fluency = Fluency(FluencyConfig(lm_path=str(model_dir / "fluency_lm.npz")))
    perplexity = fluency(pa.table({"text": texts})).column("fluency_perplexity").to_pylist()
    assert perplexity[0] < perplexity[1]


def test_curate_config_resolves_models_relative_to_itself(trained, tmp_path) -> None:
    model_dir, report = trained
    config_path = model_dir.parent / "curate.yaml"
    stages = {
        "quality": {"model_path": "model/quality.bin", "min_score": 0.3},
        "fluency": {"lm_path": "model/fluency_lm.npz"},
    }
    config_path.write_text(
        json.dumps({"inputs": [{"path": "pages"}], "output_dir": "out", "stages": stages})
    )
    config = load_curate_config(config_path)
    assert config.stages.quality.model_path == str(model_dir / "quality.bin")
    assert config.stages.quality.model_sha256 == report["files"]["quality.bin"]["sha256"]
    assert config.stages.fluency.lm_sha256 == report["files"]["fluency_lm.npz"]["sha256"]
    assert config.stages.domain is not None  # on by default: it needs no model

    stages["quality"]["model_path"] = "model/missing.bin"
    config_path.write_text(
        json.dumps({"inputs": [{"path": "pages"}], "output_dir": "out", "stages": stages})
    )
    with pytest.raises(
        ConfigError, match=r"curate.yaml: stages\.quality\.model_path: file not found"
    ):
        load_curate_config(config_path)

    stages["quality"] = {"model_path": "model/quality.bin", "model_sha256": "0" * 64}
    config_path.write_text(
        json.dumps({"inputs": [{"path": "pages"}], "output_dir": "out", "stages": stages})
    )
    with pytest.raises(ConfigError, match=r"stages\.quality\.model_sha256: .* has sha256"):
        load_curate_config(config_path)


def test_train_config_errors_name_file_and_key(tmp_path) -> None:
    config = write_labelled_set(tmp_path)
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "fasttext": {"epochs": 3}}))
    with pytest.raises(ConfigError, match=r"train\.yaml: fasttext\.epochs: unknown key"):
        load_train_config(config)
    config.write_text(json.dumps({**data, "heldout_fraction": 1.5}))
    with pytest.raises(ConfigError, match=r"train\.yaml: heldout_fraction: "):
        load_train_config(config)
    config.write_text(json.dumps({**data, "negative": [{"path": "nowhere/*.jsonl"}]}))
    with pytest.raises(ConfigError, match=r"train\.yaml: negative\[0\]\.path: .*nowhere"):
        load_train_config(config)
    assert main(["train-quality", str(config)]) == 2  # a config error, before any training


def test_cut_examples_cuts_at_line_breaks_and_drops_scraps() -> None:
    text = "\n".join(f"line {i} " + "x" * 40 for i in range(10))  # 10 lines of 48 chars
    pieces = cut_examples(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert pieces[0].startswith("line 0") and pieces[1].startswith("line 3")
    assert cut_examples("one short line", 100) == ["one short line"]  # the whole document
    assert cut_examples("", 100) == []


def test_precision_recall_undefined_cases() -> None:
    import numpy as np

    scores, labels = np.array([0.9, 0.2, 0.8]), np.array([True, False, False])
    assert precision_recall(scores, labels, 0.5) == {
        "threshold": 0.5,
        "precision": 0.5,
        "recall": 1.0,
    }
    assert precision_recall(scores, labels, 0.95)["precision"] is None  # nothing predicted
