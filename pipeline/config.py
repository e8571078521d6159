"""The run configuration: YAML in, validated pydantic models out, in one place.

Everything a run does is declared in one YAML file and checked completely before Ray
starts, so a typo costs a second, not a cluster hour. Each stage owns its config model
(in its own module); this file only assembles them. Errors name the file, the key
path and what was expected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stages.exact_dedup import ExactDedupConfig
from stages.extract import ExtractConfig
from stages.heuristics import HeuristicsConfig
from stages.langid import LangIdConfig
from stages.readers import ReaderConfig


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class InputSpec(_Strict):
    path: str
    """A file, a folder (read recursively) or a glob, local or a pyarrow filesystem URI
    (s3://bucket/crawl/*.warc.gz). Relative paths are relative to the config file."""

    name: str | None = None
    """Label for this input in document ids and the ledger; defaults to the path."""


class StagesConfig(_Strict):
    """The per-document stages run in this order; ``null`` switches one off."""

    extract: ExtractConfig | None = Field(default_factory=ExtractConfig)
    langid: LangIdConfig | None = Field(default_factory=LangIdConfig)
    heuristics: HeuristicsConfig | None = Field(default_factory=HeuristicsConfig)
    exact_dedup: ExactDedupConfig | None = Field(default_factory=ExactDedupConfig)


class RayConfig(_Strict):
    num_cpus: int | None = None
    """CPUs for an embedded local Ray (ignored when joining a cluster); None = all."""

    object_store_memory_bytes: int | None = None
    """Object store size for an embedded local Ray; None lets Ray choose (30% of RAM)."""


class CurateConfig(_Strict):
    inputs: list[InputSpec] = Field(min_length=1)
    """Where the raw documents are."""

    output_dir: str
    """Where curated shards, rejects, the ledger and the manifest go (local or URI)."""

    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    shard_input_bytes: int = Field(default=32 * 1024**2, gt=0)
    """Input files are grouped into shards of about this many (compressed) bytes; a shard
    is the unit of parallelism, of retry and of resume."""

    @field_validator("output_dir")
    @classmethod
    def _output_dir_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty path")
        return value

    def fingerprint(self) -> str:
        """Names this exact configuration: a rerun into the same folder must match it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _format_location(location: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def format_validation_error(path: str | Path, error: ValidationError) -> str:
    """One line per problem: ``file: key.path: what was expected (got: value)``."""
    lines = [f"{path}: invalid configuration ({error.error_count()} problem(s))"]
    for item in error.errors():
        location = _format_location(tuple(item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of the schema; check the spelling)"
        got = item.get("input")
        shown = "" if isinstance(got, dict) or item["type"] == "missing" else f" (got: {got!r})"
        lines.append(f"  {path}: {location}: {message}{shown[:200]}")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping with ``safe_load``; any failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: not valid YAML (or uses tags safe_load refuses): {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _resolve_relative(value: str, base: Path) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def load_curate_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CurateConfig:
    """Read, validate and resolve a curation config (relative paths against its folder)."""
    path = Path(path)
    data = read_yaml(path)
    if overrides:
        data = {**data, **overrides}
    try:
        config = CurateConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from exc
    base = path.resolve().parent
    inputs = [
        spec.model_copy(
            update={"path": _resolve_relative(spec.path, base), "name": spec.name or spec.path}
        )
        for spec in config.inputs
    ]
    return config.model_copy(
        update={"inputs": inputs, "output_dir": _resolve_relative(config.output_dir, base)}
    )
