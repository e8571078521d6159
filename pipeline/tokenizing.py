"""Tokenizing curated shards: the run config, tokenizer training, and the per-shard work.

``python -m pipeline train-tokenizer CONFIG`` trains a byte-level BPE on the curated
documents (on the driver: the ``tokenizers`` trainer is multi-threaded itself) and
writes it to ``tokenizer.tokenizer_path``. ``python -m pipeline tokenize CONFIG`` turns
every curated shard into one tokenized shard of the same number, as Ray tasks
(``pipeline/token_runner.py``) whose worker processes each load the tokenizer once:

    OUTPUT_DIR/
      tokenizer.json          a copy of the tokenizer used (the shards' ids mean nothing without it)
      docs/shard-NNNNN.parquet  id, [domain], source, language, [quality_score], format,
                                n_tokens, tokens (list<uint16>, or list<uint32> for a
                                vocabulary over 65,536; ending with the eos id); schema
                                metadata: project version, tokenizer name and sha256
      stats/NNNNN.json        per shard: rows, tokens, input and tokenizer checksums ("done")
      manifest.json           eos/pad ids, vocabulary size, shards with rows, tokens, sha256

Nothing here imports Ray. A rerun skips shards whose stats name the same input and
tokenizer checksums, and writes the same bytes for the others.
"""

from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from model_hooks.shard_format import shard_metadata
from pipeline.config import RayConfig, resolve_relative
from pipeline.safe_paths import output_problem
from pipeline.shards import (
    read_json,
    resolve_filesystem,
    shard_name,
    write_bytes_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from stages.tokens import KEPT_COLUMNS, N_TOKENS, Tokenize, TokenizeConfig, train_byte_level_bpe
from strict_config import ConfigError, StrictModel, validate_yaml

INDEX_COLUMNS = ("shard", "row", *KEPT_COLUMNS, N_TOKENS)


class TrainTokenizerConfig(StrictModel):
    vocab_size_tokens: int = Field(default=8192, ge=300)
    """Vocabulary size, special tokens included (256 byte symbols are the floor)."""

    min_frequency: int = Field(default=2, ge=1)
    """A pair is merged only if it occurs at least this often."""

    max_training_bytes: int = Field(default=200_000_000, gt=0)
    """Train on at most this much curated text (documents in shard order): bounds the
    trainer's memory on a large corpus; a sample trains almost the same merges."""


class TokenizeRunConfig(StrictModel):
    curated_dir: str
    """A curated run's output_dir (holds manifest.json and docs/)."""

    output_dir: str
    """Where the tokenized shards, their stats and manifest go."""

    tokenizer: TokenizeConfig
    """Which tokenizer (``tokenizer_path``), the end-of-document and padding tokens."""

    train: TrainTokenizerConfig = Field(default_factory=TrainTokenizerConfig)
    """Used by ``train-tokenizer`` only: writes a new ``tokenizer.tokenizer_path``."""

    ray: RayConfig = Field(default_factory=RayConfig)


def load_tokenize_config(path: str | Path) -> TokenizeRunConfig:
    """Read and validate; relative paths are relative to the config file's folder."""
    path = Path(path)
    config = validate_yaml(path, TokenizeRunConfig)
    base = path.resolve().parent
    tokenizer = config.tokenizer.model_copy(
        update={"tokenizer_path": resolve_relative(config.tokenizer.tokenizer_path, base)}
    )
    config = config.model_copy(
        update={
            "curated_dir": resolve_relative(config.curated_dir, base),
            "output_dir": resolve_relative(config.output_dir, base),
            "tokenizer": tokenizer,
        }
    )
    problem = output_problem(config.output_dir, [("curated_dir", config.curated_dir)])
    if problem is not None:
        raise ConfigError(f"{path}: output_dir: {problem}")
    return config


def curated_shards(curated_dir: str) -> list[dict[str, Any]]:
    """The curated run's document shards (from its manifest), or a ConfigError."""
    filesystem, root = resolve_filesystem(curated_dir)
    manifest = read_json(filesystem, posixpath.join(root, "manifest.json"))
    if manifest is None:
        raise ConfigError(f"curated_dir: {curated_dir} has no manifest.json (run curate first)")
    return manifest["shards"]


def _curated_texts(curated_dir: str, max_bytes: int):
    """Curated texts in shard order, up to ``max_bytes`` of UTF-8."""
    filesystem, root = resolve_filesystem(curated_dir)
    seen = 0
    for entry in curated_shards(curated_dir):
        table = pq.read_table(posixpath.join(root, entry["file"]), filesystem=filesystem)
        for text in table.column("text").to_pylist():
            if seen >= max_bytes:
                return
            text = text or ""
            seen += len(text.encode("utf-8"))
            yield text


def train_tokenizer(config: TokenizeRunConfig) -> dict[str, Any]:
    """Train a byte-level BPE on the curated text; write it to ``tokenizer_path``."""
    train = config.train
    texts = _curated_texts(config.curated_dir, train.max_training_bytes)
    tokenizer = train_byte_level_bpe(
        texts, train.vocab_size_tokens, config.tokenizer.eos_token, train.min_frequency
    )
    data = tokenizer.to_str().encode()
    filesystem, path = resolve_filesystem(config.tokenizer.tokenizer_path)
    write_bytes_atomic(filesystem, path, data)
    return {
        "path": config.tokenizer.tokenizer_path,
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def tokenizer_checksum(config: TokenizeRunConfig) -> str:
    """The tokenizer file's sha256; a missing file is a ConfigError (before Ray starts)."""
    filesystem, path = resolve_filesystem(config.tokenizer.tokenizer_path)
    try:
        with filesystem.open_input_stream(path) as stream:
            return hashlib.sha256(stream.read()).hexdigest()
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(
            f"tokenizer.tokenizer_path: cannot read {config.tokenizer.tokenizer_path} "
            "(train one with `python -m pipeline train-tokenizer CONFIG`)"
        ) from exc


def check_tokenizer(config: TokenizeRunConfig) -> Tokenize:
    """Load the tokenizer on the driver, so a bad path or token fails before Ray starts."""
    tokenizer_checksum(config)
    try:
        return Tokenize(config.tokenizer)
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise ConfigError(f"tokenizer: {exc}") from exc


def tokenized_shard_path(output_dir: str, shard: int) -> str:
    return posixpath.join(output_dir, "docs", f"shard-{shard_name(shard)}.parquet")


def shard_done(config: TokenizeRunConfig, entry: dict[str, Any], checksum: str) -> bool:
    filesystem, root = resolve_filesystem(config.output_dir)
    stats = read_json(filesystem, posixpath.join(root, "stats", f"{shard_number(entry)}.json"))
    return (
        bool(stats)
        and stats["input_sha256"] == entry["sha256"]
        and stats["tokenizer_sha256"] == checksum
    )


def shard_number(entry: dict[str, Any]) -> str:
    """A curated manifest entry's shard: ``docs/shard-00003.parquet`` -> ``00003``."""
    return posixpath.basename(entry["file"]).removeprefix("shard-").removesuffix(".parquet")


class TokenizeShards:
    """Per curated shard: read, tokenize, write the tokenized shard and its stats.

    Built once per worker process (``token_runner.tokenize_worker``): ``__init__`` loads
    the tokenizer; ``tokenize_shard`` handles one shard number."""

    def __init__(self, config: TokenizeRunConfig, entries: list[dict[str, Any]], checksum: str):
        self.config = config
        self.entries = {int(shard_number(e)): e for e in entries}
        self.checksum = checksum
        self.stage = Tokenize(config.tokenizer)
        name = posixpath.basename(config.tokenizer.tokenizer_path)
        self.metadata = shard_metadata(name, checksum, self.stage.vocab_size)

    def tokenize_shard(self, number: int) -> dict[str, Any]:
        entry = self.entries[number]
        in_fs, in_root = resolve_filesystem(self.config.curated_dir)
        documents = pq.read_table(posixpath.join(in_root, entry["file"]), filesystem=in_fs)
        tokenized = self.stage(documents).replace_schema_metadata(self.metadata)
        out_fs, out_root = resolve_filesystem(self.config.output_dir)
        written = write_parquet_atomic(out_fs, tokenized_shard_path(out_root, number), tokenized)
        tokens = int(np.asarray(tokenized.column(N_TOKENS).to_numpy()).sum())
        stats = {
            "shard": number,
            "file": f"docs/shard-{shard_name(number)}.parquet",
            **written,
            "tokens": tokens,
            "input_sha256": entry["sha256"],
            "tokenizer_sha256": self.checksum,
        }
        write_json_atomic(
            out_fs, posixpath.join(out_root, "stats", f"{shard_name(number)}.json"), stats
        )
        return stats


def write_tokenized_manifest(
    config: TokenizeRunConfig, entries: list[dict[str, Any]], stage: Tokenize, checksum: str
) -> dict[str, Any]:
    """The manifest the mixer reads: ids, vocabulary, shards; plus the tokenizer copy."""
    filesystem, root = resolve_filesystem(config.output_dir)
    tokenizer_fs, tokenizer_path = resolve_filesystem(config.tokenizer.tokenizer_path)
    with tokenizer_fs.open_input_stream(tokenizer_path) as stream:
        write_bytes_atomic(filesystem, posixpath.join(root, "tokenizer.json"), stream.read())
    shards = []
    for entry in entries:
        stats = read_json(filesystem, posixpath.join(root, "stats", f"{shard_number(entry)}.json"))
        shards.append({k: stats[k] for k in ("shard", "file", "rows", "tokens", "bytes", "sha256")})
    fingerprint = hashlib.sha256(
        (checksum + "".join(s["sha256"] for s in shards)).encode()
    ).hexdigest()[:16]
    manifest = {
        "fingerprint": fingerprint,
        "tokenizer": posixpath.basename(config.tokenizer.tokenizer_path),
        "tokenizer_sha256": checksum,
        "eos_id": stage.eos_id,
        "pad_id": stage.pad_id,
        "vocab_size": stage.vocab_size,
        "documents": sum(s["rows"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "shards": shards,
    }
    write_json_atomic(filesystem, posixpath.join(root, "manifest.json"), manifest)
    return manifest


def read_tokenized_manifest(tokenized_dir: str) -> dict[str, Any]:
    filesystem, root = resolve_filesystem(tokenized_dir)
    manifest = read_json(filesystem, posixpath.join(root, "manifest.json"))
    if manifest is None:
        raise ConfigError(
            f"--tokenized: {tokenized_dir} has no manifest.json (run `python -m pipeline tokenize`)"
        )
    return manifest


def read_index(tokenized_dir: str, manifest: dict[str, Any]) -> pa.Table:
    """Every document's metadata (all columns but the tokens) with its shard and row:
    what mixing validates and plans from, a few dozen bytes per document."""
    filesystem, root = resolve_filesystem(tokenized_dir)
    tables = []
    for entry in manifest["shards"]:
        path = posixpath.join(root, entry["file"])
        names = pq.read_schema(path, filesystem=filesystem).names
        table = pq.read_table(
            path, columns=[c for c in names if c != "tokens"], filesystem=filesystem
        )
        table = table.add_column(0, "row", pa.array(np.arange(table.num_rows), pa.int64()))
        tables.append(
            table.add_column(0, "shard", pa.array([entry["shard"]] * table.num_rows, pa.int32()))
        )
    index = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    return index.select([c for c in INDEX_COLUMNS if c in index.column_names])
