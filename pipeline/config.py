"""The run configuration: YAML in, validated pydantic models out, in one place.

Everything a run does is declared in one YAML file and checked completely before Ray
starts, so a typo costs a second, not a cluster hour. Each stage owns its config model
(in its own module); this file only assembles them. Errors name the file, the key
path and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import reprlib
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

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


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


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


class InputSpec(_Strict):
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


class StagesConfig(_Strict):
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


class RayConfig(_Strict):
    num_cpus: int | None = Field(default=None, gt=0, strict=True)
    """CPUs for an embedded local Ray (ignored when joining a cluster); None = all."""

    object_store_memory_bytes: int | None = Field(default=None, ge=75 * 1024**2, strict=True)
    """Object store size for an embedded local Ray (Ray's minimum: 75 MiB); None lets Ray
    choose (30% of RAM)."""


class CurateConfig(_Strict):
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

    def fingerprint(self) -> str:
        """Names this exact configuration: a rerun into the same folder must match it.
        Made of the config's content (paths relative to the config file, model and eval
        file digests), never of where the checkout or Ray runs."""
        canonical = json.dumps(self.portable_dump(), sort_keys=True)
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


def _format_location(location: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


_SHORT = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_SHORT.maxstring = _SHORT.maxother = 160
_SHORT.maxlist = _SHORT.maxdict = 8


def format_validation_error(path: str | Path, error: ValidationError) -> str:
    """One line per problem: ``file: key.path: what was expected (got: value)``."""
    lines = [f"{path}: invalid configuration ({error.error_count()} problem(s))"]
    for item in error.errors():
        location = _format_location(tuple(item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of the schema; check the spelling)"
        got = item.get("input")
        # reprlib bounds the work: a huge value is never rendered whole just to be cut.
        hidden = isinstance(got, dict) or item["type"] == "missing"
        shown = "" if hidden else f" (got: {_SHORT.repr(got)})"
        lines.append(f"  {path}: {location}: {message}{shown[:200]}")
    return "\n".join(lines)


MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists a config may have (the schemas need < 10)."""
MAX_YAML_INT_DIGITS = 24
"""Longest integer literal accepted (int64 has 19 digits): a 5,000-digit number is an
attack or a typo, and Python refuses to parse > 4,300 digits with a traceback."""
MAX_YAML_BYTES = 4 * 1024**2
"""Largest config file read: configs are a few kilobytes."""
PLAIN_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("str", "int", "float", "bool", "null", "seq", "map")
)
"""The only tags a config's values may carry: ``!!binary``, ``!!set``, ``!!timestamp``,
``!!python/...`` and local tags are refused rather than turned into surprising types."""


class _BoundedLoader(yaml.SafeLoader):
    """``safe_load`` with bounds, so loading a config costs what its bytes cost.

    Refused, each with an error naming the key path and pointing at the line: anchors
    and aliases (a 500-byte "billion laughs" file expands to gigabytes), nesting deeper
    than MAX_YAML_DEPTH (a recursion error otherwise), integers longer than
    MAX_YAML_INT_DIGITS, any tag outside PLAIN_TAGS, and a key given twice in one
    mapping (YAML would keep the last one silently, so a second ``output_dir:`` line
    would win unnoticed)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._keys: list[str] = []  # the key path of the node being composed
        self._node_keys: dict[int, str] = {}  # id(node) -> its key path, for construction

    def _key_path(self) -> str:
        """``stages.langid.languages[1]``; a deep path shows its first levels only."""
        keys = [key for key in self._keys if key]
        shown = keys[:6] + (["..."] if len(keys) > 6 else [])
        return "".join(
            key if key.startswith("[") or index == 0 else f".{key}"
            for index, key in enumerate(shown)
        )

    def _refuse(self, problem: str, mark: Any, key: str | None = None) -> NoReturn:
        error = yaml.constructor.ConstructorError(None, None, problem, mark)
        error.key_path = self._key_path() if key is None else key
        raise error

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if isinstance(index, yaml.ScalarNode):
            self._keys.append(str(index.value)[:80])
        elif isinstance(index, int):
            self._keys.append(f"[{index}]")
        else:
            self._keys.append("")  # a mapping key, or the document
        try:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                self._refuse(
                    f"found alias *{event.anchor}: anchors and aliases are refused in"
                    " configs (write the value out)", event.start_mark,
                )  # fmt: skip
            if getattr(event, "anchor", None) is not None:
                self._refuse(
                    f"found anchor &{event.anchor}: anchors and aliases are refused in configs",
                    event.start_mark,
                )
            if len(self._keys) > MAX_YAML_DEPTH:
                self._refuse(f"nesting deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
            node = super().compose_node(parent, index)
            self._node_keys[id(node)] = self._key_path()
            return node
        finally:
            self._keys.pop()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        key = self._node_keys.get(id(node), "")
        if node.tag not in PLAIN_TAGS:
            self._refuse(
                f"tag {node.tag} is refused (only plain strings, numbers, booleans, null,"
                " lists and mappings; quote a value to make it a string)",
                node.start_mark, key,
            )  # fmt: skip
        if node.tag.endswith(":int"):
            digits = sum(character.isdigit() for character in str(node.value))
            if digits > MAX_YAML_INT_DIGITS:
                self._refuse(
                    f"an integer of {digits} digits (at most {MAX_YAML_INT_DIGITS})",
                    node.start_mark, key,
                )  # fmt: skip
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # unhashable or exotic keys: the base class judges them
            if key in seen:
                self._refuse(
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                    ".".join(k for k in (self._node_keys.get(id(node), ""), str(key)) if k),
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping with ``safe_load``; any failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES} bytes; not a config")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # safe_load, bounded (see the class)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        key = getattr(exc, "key_path", "")
        raise ConfigError(
            f"{path}: {key + ': ' if key else ''}not valid YAML"
            f" (or uses tags safe_load refuses): {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _resolve_relative(value: str, base: Path) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


Model = TypeVar("Model", bound=BaseModel)


def validate_yaml(
    path: Path, schema: type[Model], overrides: dict[str, Any] | None = None
) -> Model:
    """Read ``path`` and validate it against ``schema``; every failure is a ConfigError
    naming the file and key. The one way each command's YAML is loaded."""
    data = read_yaml(path)
    if overrides:
        data = {**data, **overrides}
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from exc


def load_curate_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CurateConfig:
    """Read, validate and resolve a curation config (relative paths against its folder)."""
    path = Path(path)
    config = validate_yaml(path, CurateConfig, overrides)
    base = path.resolve().parent
    inputs = [
        spec.model_copy(
            update={"path": _resolve_relative(spec.path, base), "name": spec.name or spec.path}
        )
        for spec in config.inputs
    ]
    config = config.model_copy(
        update={"inputs": inputs, "output_dir": _resolve_relative(config.output_dir, base)}
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
        resolved = _resolve_relative(spec.path, base)
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
