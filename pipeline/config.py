"""The curation run's configuration: the YAML schema of ``curate`` and its path rules.

Everything a run does is declared in one YAML file and checked completely before Ray
starts, so a typo costs a second, not a cluster hour. Each stage owns its config model
(in its own module); this file only assembles them and resolves paths (relative to the
config file, URIs of the filesystems pyarrow opens, outputs fenced off inputs and system
folders). The strict base and the bounded YAML loader every config shares are in
``strict_config``; errors name the file, the key path and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from pipeline.safe_paths import is_uri, overlap_problem, system_folder_problem
from stages.decontaminate import DecontaminateConfig
from stages.domain import DomainConfig
from stages.exact_dedup import ExactDedupConfig
from stages.extract import ExtractConfig
from stages.fluency import FluencyConfig
from stages.heuristics import HeuristicsConfig
from stages.langid import LangIdConfig
from stages.minhash import MinHashConfig
from stages.quality import QualityConfig
from stages.readers import ReaderConfig
from stages.template_lines import TemplateLinesConfig
from strict_config import ConfigError, StrictModel, validate_yaml

FILESYSTEM_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
"""URI schemes pyarrow opens as a filesystem; anything else (http, ftp) is refused at
validation instead of failing in a worker."""


def check_filesystem_uri(value: str) -> str:
    """Pydantic validator body: a local path, or a URI of a scheme pyarrow can list."""
    if "\x00" in value:
        raise ValueError("a path cannot hold a NUL character")
    if is_uri(value):
        scheme = value.partition("://")[0].lower()
        if scheme not in FILESYSTEM_SCHEMES:
            raise ValueError(
                f"{scheme}:// is not a filesystem this project reads or writes"
                f" (use a local path or one of: {', '.join(FILESYSTEM_SCHEMES)})"
            )
    return value


class InputSpec(StrictModel):
    path: str
    """A file, a folder (read recursively) or a glob, local or a pyarrow filesystem URI
    (s3://bucket/crawl/*.warc.gz). Relative paths are relative to the config file."""

    name: str | None = None
    """Label for this input in document ids and the ledger; defaults to the path."""

    follow_symlinks_outside: bool = False
    """Symlinks are followed only when they point inside this input's root folder; a
    link pointing elsewhere becomes a ledger row (``symlink_outside_input``). ``true``
    follows them anywhere (loops are still detected)."""

    @field_validator("path")
    @classmethod
    def _readable_filesystem(cls, value: str) -> str:
        return check_filesystem_uri(value)


class StagesConfig(StrictModel):
    """The per-document stages run in this order; ``null`` switches one off."""

    extract: ExtractConfig | None = Field(default_factory=ExtractConfig)
    langid: LangIdConfig | None = Field(default_factory=LangIdConfig)
    heuristics: HeuristicsConfig | None = Field(default_factory=HeuristicsConfig)
    quality: QualityConfig | None = None  # needs a model from `train-quality`
    fluency: FluencyConfig | None = None  # its perplexity rule needs train-quality's LM
    domain: DomainConfig | None = Field(default_factory=DomainConfig)
    decontaminate: DecontaminateConfig | None = None
    exact_dedup: ExactDedupConfig | None = Field(default_factory=ExactDedupConfig)
    minhash_dedup: MinHashConfig | None = None
    template_lines: TemplateLinesConfig | None = None


class RayConfig(StrictModel):
    num_cpus: int | None = Field(default=None, gt=0, strict=True)
    """CPUs for an embedded local Ray (ignored when joining a cluster); None = all."""

    object_store_memory_bytes: int | None = Field(default=None, ge=75 * 1024**2, strict=True)
    """Object store size for an embedded local Ray (Ray's minimum: 75 MiB); None: 512 MiB
    (``pipeline.ray_exec.EMBEDDED_OBJECT_STORE_BYTES``), room for the global rounds' small
    tables, never documents."""

    driver_round_max_bytes: int = Field(default=4 * 1024**2, ge=0, strict=True)
    """A global step's per-shard rows (digests, band keys, line hashes) meet in the driver
    process, which decides in one plain call, while they add up to at most this many
    bytes; beyond it every round runs as Ray tasks with an exchange, so no process holds
    every row. Either path writes the same decisions. 4 MiB: about 4,000 documents of
    MinHash band rows, where the driver's one core stops beating the workers (README)."""

    executor: Literal["auto", "ray", "in_process"] = "auto"
    """Where the passes run. ``auto``: in this process, without starting Ray, when the
    run is embedded (no ``--address``, no $RAY_ADDRESS) and ``num_cpus`` is 1; on Ray
    otherwise. ``ray``: always on Ray (e.g. to test a Ray setup on one CPU);
    ``in_process``: always in this process (one CPU, whatever ``num_cpus`` says). The
    outputs are the same bytes either way (a run setting: a folder curated one way
    resumes the other). In-process saves Ray's fixed cost, about 6 CPU-seconds, 3 s of
    start and 800 MiB of daemons and a worker (issue 18; figures in the README)."""


RUN_SETTINGS = frozenset({"ray", "max_error_share"})
"""CurateConfig keys that change how a run executes, never its outputs (the outputs are
byte-identical whatever the CPUs: tests/pipeline/test_run_settings.py): left out of the
fingerprint, so changing them between a run and its rerun resumes instead of refusing."""


def without_run_settings(dump: dict[str, Any]) -> dict[str, Any]:
    """A curate config's dump without ``RUN_SETTINGS``: what two runs into one folder
    must share (also a dump stored by an earlier run)."""
    return {key: value for key, value in dump.items() if key not in RUN_SETTINGS}


class CurateConfig(StrictModel):
    inputs: list[InputSpec] = Field(min_length=1)
    """Where the raw documents are."""

    output_dir: str
    """Where curated shards, rejects, the ledger and the manifest go (local or URI)."""

    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    shard_input_bytes: int = Field(default=32 * 1024**2, gt=0, strict=True)  # `true` is no size
    """Input files are grouped into shards of about this many (compressed) bytes; a shard
    is the unit of parallelism, of retry and of resume."""

    min_piece_bytes: int = Field(default=1024**2, gt=0, strict=True)
    """A file larger than ``shard_input_bytes`` is cut into pieces of at least this many
    bytes: a small target then groups whole files instead of cutting them to crumbs."""

    lead_shard_bytes: int = Field(default=128 * 1024, ge=0, strict=True)
    """The run's first shard holds at most this many input bytes (the first file's first
    piece, where its format can be cut), so the first output, or the first failure,
    shows after a short shard instead of a full one. On the crawl bench's WARC files
    (about 1.5 MB a shard, 2.4-2.8 s of work) the lead shard took 0.51-0.54 s in a
    fresh process at 128 KiB (5 pages), 0.91-0.94 s at 256 KiB (14 pages) and 0.40-0.55 s
    at 64 KiB (2 pages): below 128 KiB the process's first-use imports dominate. Only
    where it is below ``shard_input_bytes``; 0 for none (which also resumes an output
    folder written before this setting existed). One piece per run, so
    ``min_piece_bytes`` does not bound it; ids and outputs are the same with or without
    it."""

    max_error_share: float = Field(default=0.01, ge=0, le=1)
    """The share of input documents that may fail in a stage (``error:`` reasons: an
    exception, an extraction time-out, an unreadable file) before ``curate`` exits with
    status 3. The outputs are written either way; the failed documents are in rejects/
    with their reason. A real crawl has a few pages no extractor finishes, so 0 is
    strict; many failures mean a bug or broken input, which a scheduler should see."""

    allow_system_output_dir: bool = False
    """An output_dir in a system folder (/etc, /usr, /bin, /boot, /proc, /sys, /dev, ...)
    or ``/`` itself is refused unless this is ``true``."""

    @field_validator("output_dir")
    @classmethod
    def _output_dir_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty path")
        return check_filesystem_uri(value)

    def placement_problem(self) -> str | None:
        """Why output_dir cannot be written (overlaps an input, or a system folder)."""
        inputs = [(f"inputs[{i}].path", spec.path) for i, spec in enumerate(self.inputs)]
        problem = overlap_problem(self.output_dir, inputs)
        if problem is None and not self.allow_system_output_dir:
            problem = system_folder_problem(self.output_dir)
            if problem is not None:
                problem += " (set allow_system_output_dir: true if you really mean it)"
        return problem

    _config_dir: str | None = PrivateAttr(default=None)
    """The config file's folder (set by load_curate_config): paths under it are named
    relative to it in the fingerprint."""

    def portable_dump(self) -> dict[str, Any]:
        """The config as JSON with every path inside the config file's folder written
        relative to it (``./data``): the same job gives the same dump wherever its
        checkout lies, e.g. in a Ray job's working directory, whose absolute path holds
        the Ray session and changes when the cluster restarts."""
        return _relative_paths(self.model_dump(mode="json"), self._config_dir)

    def output_settings(self) -> dict[str, Any]:
        """The portable dump without the settings that change how a run executes but not
        what it writes (``RUN_SETTINGS``): what two runs into one folder must share.
        ``lead_shard_bytes: 0`` is left out too: it plans as the versions before the
        setting did, so a folder one of them wrote resumes with it."""
        settings = without_run_settings(self.portable_dump())
        if settings.get("lead_shard_bytes") == 0:
            del settings["lead_shard_bytes"]
        return settings

    def fingerprint(self) -> str:
        """Names this exact configuration: a rerun into the same folder must match it.
        Made of the config's content (paths relative to the config file, model and eval
        file digests), never of where the checkout or Ray runs, nor of ``RUN_SETTINGS``:
        a run killed on 2 CPUs resumes on 16."""
        canonical = json.dumps(self.output_settings(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _relative_paths(value: Any, folder: str | None) -> Any:
    """``value`` with every string naming ``folder`` or a path under it made relative."""
    if folder is None:
        return value
    if isinstance(value, dict):
        return {key: _relative_paths(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [_relative_paths(item, folder) for item in value]
    if isinstance(value, str) and (value == folder or value.startswith(folder.rstrip("/") + "/")):
        return "./" + posixpath.relpath(value, folder) if value != folder else "."
    return value


def resolve_relative(value: str, base: Path) -> str:
    """A path from a config file, made absolute against the file's folder (URIs and
    absolute paths are kept): what a relative path in a config means."""
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def load_curate_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CurateConfig:
    """Read, validate and resolve a curation config (relative paths against its folder)."""
    path = Path(path)
    config = validate_yaml(path, CurateConfig, overrides)
    base = path.resolve().parent
    inputs = [
        spec.model_copy(
            update={"path": resolve_relative(spec.path, base), "name": spec.name or spec.path}
        )
        for spec in config.inputs
    ]
    config = config.model_copy(
        update={"inputs": inputs, "output_dir": resolve_relative(config.output_dir, base)}
    )
    problem = config.placement_problem()
    if problem is not None:
        raise ConfigError(f"{path}: output_dir: {problem}")
    config = _resolve_eval_files(config, path, base)
    config = _resolve_model_files(config, path, base)
    config._config_dir = str(base)
    return config


def _resolve_eval_files(config: CurateConfig, path: Path, base: Path) -> CurateConfig:
    """Decontamination eval files, relative to the config file; local ones must exist."""
    decontaminate = config.stages.decontaminate
    if decontaminate is None:
        return config
    specs = []
    for index, spec in enumerate(decontaminate.eval_files):
        resolved = resolve_relative(spec.path, base)
        key = f"stages.decontaminate.eval_files[{index}]"
        digest = spec.sha256
        if "://" not in resolved:
            if not Path(resolved).is_file():
                raise ConfigError(f"{path}: {key}.path: file not found: {resolved}")
            digest = hashlib.sha256(Path(resolved).read_bytes()).hexdigest()
            if spec.sha256 is not None and spec.sha256 != digest:
                raise ConfigError(
                    f"{path}: {key}.sha256: {resolved} has sha256 {digest}, not {spec.sha256}"
                )
        specs.append(spec.model_copy(update={"path": resolved, "sha256": digest}))
    decontaminate = decontaminate.model_copy(update={"eval_files": specs})
    stages = config.stages.model_copy(update={"decontaminate": decontaminate})
    return config.model_copy(update={"stages": stages})


def _resolve_model_files(config: CurateConfig, path: Path, base: Path) -> CurateConfig:
    """Trained model files a stage names (quality, fluency), relative to the config file:
    they must exist, and their digests enter the config so run.json names the models."""
    updates = {}
    for name in StagesConfig.model_fields:
        stage = getattr(config.stages, name)
        if stage is None or not hasattr(stage, "resolve_paths"):
            continue
        try:
            updates[name] = stage.resolve_paths(base)
        except ValueError as exc:  # the message starts with the field at fault
            raise ConfigError(f"{path}: stages.{name}.{exc}") from exc
    if not updates:
        return config
    return config.model_copy(update={"stages": config.stages.model_copy(update=updates)})
