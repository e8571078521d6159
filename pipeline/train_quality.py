"""``python -m pipeline train-quality CONFIG.yaml``: train the quality classifier and the
fluency language model from labelled sources.

DCLM's recipe, which LongCat-Flash's first quality step follows: positives are
reference-quality text, negatives a random sample of crawl; the classifier learns
"looks like reference text" and the curate run keeps what scores high. The same
positives fit the character n-gram model the fluency stage measures perplexity with,
and the word-class n-gram model it measures word-order gain with.

Sources are read the way a curate run reads them (``stages/readers.py``; HTML goes
through ``stages/extract.py``; an optional langid pass keeps the languages the run
keeps), so training text looks like what the stages see. Documents are cut into
examples of about ``example_chars`` characters, the length the quality stage reads.
The held-out split is by document, never by example, so a book's chapters cannot sit
on both sides. Single-process: meant for thousands of documents, not a crawl.

Writes to ``output_dir``: ``quality.bin`` (``quality.ftz`` when quantized), the
``fluency_lm.npz`` n-gram model, the ``fluency_words.npz`` word-order model, and
``quality.json`` (the training config, counts,
held-out precision/recall and the files' digests).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow.compute as pc
from pydantic import Field

from pipeline.safe_paths import output_problem
from pipeline.shards import list_input
from stages.base import DROP_REASON, apply_to_live_rows
from stages.extract import Extract, ExtractConfig
from stages.langid import LangId, LangIdConfig
from stages.ngram_lm import CharNgramLM
from stages.quality import LABEL_NEGATIVE, LABEL_POSITIVE, model_text, positive_probability
from stages.readers import ReaderConfig, read_shard
from stages.word_order import WordOrderModel, median, shuffled_words
from strict_config import ConfigError, StrictModel, validate_yaml

MODEL_STEM = "quality"
LM_FILE = "fluency_lm.npz"
WORD_MODEL_FILE = "fluency_words.npz"
# fasttext-numpy2 0.10.4 initialises only the first ``thread`` tenths of the input matrix
# (one tenth per thread); the rest keeps whatever the allocator handed out, and training
# then diverges to NaN or learns nothing, depending on the run (measured here). With 11
# threads every tenth is initialised, but training is hogwild: two trainings of one
# config differ, and so does everything downstream (curated shards, tokenizer, plans,
# checkpoints). So training runs on one thread while glibc fills every block it hands
# out with zeros (mallopt M_PERTURB): the nine uninitialised tenths start at zero, the
# first tenth from the seed, and the same config gives the same model bytes.
_TRAIN_THREADS = 1
_HOGWILD_THREADS = 11  # only where the allocator cannot be told (not glibc)
_M_PERTURB = -6  # glibc mallopt: allocations are filled with (byte ^ 0xff), frees with byte
_PERTURB_ZERO_FILL = 0xFF


@contextlib.contextmanager
def _zero_filled_allocations() -> Iterator[bool]:
    """While open, glibc fills every block malloc returns with zeros (freed blocks with
    0xff), so a matrix fastText leaves partly uninitialised starts at zero instead of
    at the heap's leftovers (which hold pointers: they differ on every run). Yields
    False where mallopt is unavailable (not glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
        zeroed = bool(mallopt(_M_PERTURB, _PERTURB_ZERO_FILL))
    except (OSError, AttributeError):
        yield False
        return
    try:
        yield zeroed
    finally:
        mallopt(_M_PERTURB, 0)


class SourceSpec(StrictModel):
    path: str
    """File, folder (recursive) or glob of WARC/HTML/JSONL/Parquet/text files; relative
    paths are relative to the config file."""
    name: str | None = None
    """Label in the report; defaults to the path."""
    max_documents: int | None = Field(default=None, gt=0)
    """A seeded random sample of at most this many documents (before extraction)."""


class FastTextParams(StrictModel):
    """``fasttext.train_supervised`` arguments. The bucket is small on purpose: the
    default 2,000,000 buckets make a 400 MB model for a few thousand examples."""

    epoch: int = Field(default=25, gt=0)
    """Passes over the training examples."""
    lr: float = Field(default=0.5, gt=0.0)
    """Learning rate."""
    word_ngrams: int = Field(default=2, ge=1, le=5)
    """Word n-gram length hashed into buckets (2: bigrams as in DCLM's classifier)."""
    dim: int = Field(default=16, gt=0)
    """Embedding size."""
    bucket: int = Field(default=10_000, ge=0)
    """Hash buckets for word n-grams; the model holds (words + bucket) * dim floats."""
    min_count: int = Field(default=2, ge=1)
    """Words seen fewer times are ignored."""
    quantize: bool = False
    """Product-quantize the model (.ftz): the demo's 821 kB model became 165 kB, held-out
    precision moved by about 0.01, and training took 10 s longer (k-means over every
    row; 50 s at 100,000 buckets). A small bucket is the cheaper cut."""


class TrainQualityConfig(StrictModel):
    positive: list[SourceSpec] = Field(min_length=1)
    """Reference-quality text (the class the stage keeps)."""
    negative: list[SourceSpec] = Field(min_length=1)
    """Random crawl: what the stage should rank below the positives."""
    output_dir: str
    """Where the model, its JSON and the fluency LM are written."""
    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    """How the sources are read (as in a curate config)."""
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    """How HTML sources are extracted; use the curate run's settings."""
    languages: list[str] | None = None
    """Keep only examples langid labels with these languages (the run's languages);
    None skips language identification."""
    example_chars: int = Field(default=2000, gt=0)
    """Documents are cut at line breaks into examples of about this many characters;
    match the quality stage's max_chars."""
    max_examples_per_document: int | None = Field(default=40, gt=0)
    """Cap per document, so three books do not outweigh a thousand pages."""
    heldout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share of documents (not examples) held out for precision/recall."""
    balance_classes: bool = True
    """Down-sample the larger class of the training split to the smaller one."""
    thresholds: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.5], min_length=1
    )
    """P(positive) thresholds at which held-out precision/recall are reported."""
    seed: int = 0
    """Seeds the source samples, the split, the balancing and fastText."""
    fasttext: FastTextParams = Field(default_factory=FastTextParams)
    """Classifier hyperparameters."""
    fluency_lm_order: int | None = Field(default=4, ge=1, le=8)
    """Character n-gram order of the fluency LM fitted on the positives; None: no LM."""
    word_order_order: int | None = Field(default=3, ge=2, le=6)
    """Token n-gram order of the word-order model fitted on the positives; None: none."""
    word_order_vocabulary: int = Field(default=150, ge=1, le=4096)
    """Most frequent positive-side words (and marks) the word-order model keeps as
    themselves; every other word becomes a shape class."""


def load_train_config(path: str | Path) -> TrainQualityConfig:
    """Read and validate; relative source paths and output_dir resolve against the file."""
    path = Path(path)
    config = validate_yaml(path, TrainQualityConfig)
    base = path.resolve().parent

    def resolve(value: str) -> str:
        return value if "://" in value or Path(value).is_absolute() else str(base / value)

    def sources(key: str, specs: list[SourceSpec]) -> list[SourceSpec]:
        resolved = []
        for index, spec in enumerate(specs):
            spec = spec.model_copy(
                update={"path": resolve(spec.path), "name": spec.name or spec.path}
            )
            try:  # fail before minutes of extraction, naming the entry
                list_input(spec.path, spec.name)
            except (FileNotFoundError, OSError) as exc:
                raise ConfigError(f"{path}: {key}[{index}].path: {exc}") from exc
            resolved.append(spec)
        return resolved

    config = config.model_copy(
        update={
            "positive": sources("positive", config.positive),
            "negative": sources("negative", config.negative),
            "output_dir": resolve(config.output_dir),
        }
    )
    inputs = [(f"positive[{i}].path", spec.path) for i, spec in enumerate(config.positive)]
    inputs += [(f"negative[{i}].path", spec.path) for i, spec in enumerate(config.negative)]
    problem = output_problem(config.output_dir, inputs)
    if problem is not None:
        raise ConfigError(f"{path}: output_dir: {problem}")
    return config


def read_documents(spec: SourceSpec, config: TrainQualityConfig) -> list[tuple[str, str]]:
    """(document id, text) of one source as the curate stages would see it."""
    try:
        filesystem, files = list_input(spec.path, spec.name or spec.path)
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(f"source {spec.name!r}: {exc}") from exc
    readable = [(f.path, f.source) for f in files if f.problem is None]  # no FIFOs, no links out
    table = read_shard(readable, 0, filesystem, config.reader)
    table = table.filter(pc.is_null(table.column(DROP_REASON)))
    if spec.max_documents is not None and table.num_rows > spec.max_documents:
        rows = random.Random(f"{config.seed}:{spec.name}").sample(
            range(table.num_rows), spec.max_documents
        )
        table = table.take(sorted(rows))
    if "html" in table.column("format").to_pylist():
        extract = Extract(config.extract)
        try:
            table = apply_to_live_rows(extract, table)
        finally:
            extract.child.close()
    if config.languages is not None:
        # Language only: uncertain pages are part of the crawl the negatives sample.
        try:
            langid = LangId(LangIdConfig(languages=config.languages, min_score=None))
        except ValueError as exc:  # a code the language model does not know
            raise ConfigError(f"languages: {exc}") from exc
        table = apply_to_live_rows(langid, table)
    table = table.filter(pc.is_null(table.column(DROP_REASON)))
    ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
    return [(i, t) for i, t in zip(ids, texts, strict=True) if t and t.strip()]


def cut_examples(text: str, example_chars: int) -> list[str]:
    """Consecutive pieces of about ``example_chars``, cut at line breaks; a short tail
    is kept only when it is the whole document (it would be an unrepresentative scrap)."""
    pieces, current = [], ""
    for line in text.strip().splitlines(keepends=True):
        current += line
        if len(current) >= example_chars:
            pieces.append(current[:example_chars])
            current = ""
    if current.strip() and (not pieces or len(current) >= example_chars // 4):
        pieces.append(current)
    return pieces


def _split_examples(
    documents: list[tuple[str, str]], config: TrainQualityConfig, label: str
) -> tuple[list[str], list[str]]:
    """(train, held-out) example texts; a document's side follows from its id and seed."""
    train: list[str] = []
    heldout: list[str] = []
    rng = random.Random(f"{config.seed}:{label}:examples")
    for doc_id, text in documents:
        pieces = cut_examples(text, config.example_chars)
        cap = config.max_examples_per_document
        if cap is not None and len(pieces) > cap:
            pieces = rng.sample(pieces, cap)
        digest = hashlib.sha256(f"{config.seed}:{doc_id}".encode()).digest()
        side = heldout if int.from_bytes(digest[:8]) / 2**64 < config.heldout_fraction else train
        side.extend(pieces)
    return train, heldout


def _train_fasttext(positives: list[str], negatives: list[str], config: TrainQualityConfig):
    import fasttext

    params = config.fasttext
    lines = [f"{LABEL_POSITIVE} {model_text(t, config.example_chars)}" for t in positives]
    lines += [f"{LABEL_NEGATIVE} {model_text(t, config.example_chars)}" for t in negatives]
    random.Random(f"{config.seed}:shuffle").shuffle(lines)
    with tempfile.TemporaryDirectory() as tmp, _zero_filled_allocations() as zeroed:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        threads = _TRAIN_THREADS if zeroed else _HOGWILD_THREADS
        common = {"epoch": params.epoch, "lr": params.lr, "thread": threads}
        model = fasttext.train_supervised(
            input=str(train_file), wordNgrams=params.word_ngrams, dim=params.dim,
            bucket=params.bucket, minCount=params.min_count, seed=config.seed, verbose=0,
            **common,
        )  # fmt: skip
        if params.quantize:
            model.quantize(input=str(train_file), qnorm=True, retrain=False, verbose=0, **common)
    model.training_threads = threads  # 1: reproducible; more: hogwild (quality.json says)
    return model


def precision_recall(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision and recall of "score >= threshold means positive"; None when undefined."""
    predicted = scores >= threshold
    true_positives = int(np.sum(predicted & labels))
    precision = true_positives / int(predicted.sum()) if predicted.any() else None
    recall = true_positives / int(labels.sum()) if labels.any() else None
    return {"threshold": threshold, "precision": precision, "recall": recall}


def train_quality(config: TrainQualityConfig) -> dict[str, Any]:
    """Read, split, train, evaluate and save; returns what quality.json records."""
    sides = {}
    for label, specs in (("positive", config.positive), ("negative", config.negative)):
        documents = [doc for spec in specs for doc in read_documents(spec, config)]
        if not documents:
            raise ConfigError(f"{label}: the sources hold no readable documents")
        sides[label] = (len(documents), *_split_examples(documents, config, label))
    (_, pos_train, pos_held), (_, neg_train, neg_held) = sides["positive"], sides["negative"]
    if not pos_train or not neg_train:
        raise ConfigError("a class has no training examples: add documents or lower heldout")
    if config.balance_classes:
        rng = random.Random(f"{config.seed}:balance")
        size = min(len(pos_train), len(neg_train))
        pos_fit, neg_fit = rng.sample(pos_train, size), rng.sample(neg_train, size)
    else:
        pos_fit, neg_fit = pos_train, neg_train
    model = _train_fasttext(pos_fit, neg_fit, config)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model_file = output / f"{MODEL_STEM}.{'ftz' if config.fasttext.quantize else 'bin'}"
    model.save_model(str(model_file))

    held = pos_held + neg_held
    labels = np.array([True] * len(pos_held) + [False] * len(neg_held))
    scores = positive_probability(model, [model_text(t, config.example_chars) for t in held])
    report: dict[str, Any] = {
        "model": model_file.name,
        "documents": {label: side[0] for label, side in sides.items()},
        "examples": {
            "train": {"positive": len(pos_fit), "negative": len(neg_fit)},
            "heldout": {"positive": len(pos_held), "negative": len(neg_held)},
        },
        "heldout": [precision_recall(scores, labels, t) for t in config.thresholds],
        "training_threads": model.training_threads,
    }
    files = [model_file]
    if config.fluency_lm_order is not None:
        lm = CharNgramLM.fit(pos_train, config.fluency_lm_order)
        lm.save(output / LM_FILE)
        files.append(output / LM_FILE)
        report["fluency_lm"] = {"file": LM_FILE, **_perplexities(lm, pos_held, neg_held)}
    if config.word_order_order is not None:
        words = WordOrderModel.fit(pos_train, config.word_order_order, config.word_order_vocabulary)
        words.save(output / WORD_MODEL_FILE)
        files.append(output / WORD_MODEL_FILE)
        report["word_order"] = {"file": WORD_MODEL_FILE, **_gains(words, pos_held, neg_held)}
    report["files"] = {
        f.name: {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        for f in files
    }
    report["config"] = config.model_dump(mode="json")
    (output / f"{MODEL_STEM}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _perplexities(lm: CharNgramLM, positives: list[str], negatives: list[str]) -> dict[str, Any]:
    """Median held-out perplexity per class: how far apart the fluency threshold can sit."""
    medians = {}
    for label, texts in (("positive", positives), ("negative", negatives)):
        values = [p for p in map(lm.perplexity, texts) if p is not None]
        medians[label] = round(float(np.median(values)), 3) if values else None
    return {"heldout_median_perplexity": medians}


def _gains(words: WordOrderModel, positives: list[str], negatives: list[str]) -> dict[str, Any]:
    """Median held-out word-order gain (bits per token) of each class and of the held-out
    positives with their words shuffled: the fluency threshold belongs between the
    positives and their shuffled copies."""
    shuffled = [shuffled_words(text, f"shuffle:{i}") for i, text in enumerate(positives)]
    return {
        "heldout_median_gain": {
            label: median(words.order_gain(t, 20) for t in texts)
            for label, texts in (
                ("positive", positives),
                ("negative", negatives),
                ("shuffled_positive", shuffled),
            )
        }
    }


def render_report(report: dict[str, Any], output_dir: str) -> str:
    """The lines the CLI prints."""
    train, held = report["examples"]["train"], report["examples"]["heldout"]
    lines = [
        f"documents: positive {report['documents']['positive']}, "
        f"negative {report['documents']['negative']}",
        f"examples: train {train['positive']}+/{train['negative']}-, "
        f"held out {held['positive']}+/{held['negative']}-",
    ]
    for row in report["heldout"]:
        p, r = (f"{v:.3f}" if v is not None else "n/a" for v in (row["precision"], row["recall"]))
        lines.append(f"held-out at P(positive) >= {row['threshold']}: precision {p}, recall {r}")
    if "fluency_lm" in report:
        medians = report["fluency_lm"]["heldout_median_perplexity"]
        lines.append(f"fluency LM held-out median perplexity: {medians}")
    if "word_order" in report:
        gains = report["word_order"]["heldout_median_gain"]
        lines.append(f"word-order model held-out median gain (bits/token): {gains}")
    sizes = ", ".join(f"{name} {entry['bytes']:,} B" for name, entry in report["files"].items())
    lines.append(f"wrote {sizes} and {MODEL_STEM}.json to {output_dir}")
    return "\n".join(lines)
