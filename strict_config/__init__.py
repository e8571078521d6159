"""One strict base for every config model and one YAML loader for every config file.

Why a top-level package of its own: ``stages/`` (each stage's config), ``model_hooks/``
(``ModelConfig``, ``TrainConfig``) and ``pipeline/`` (the run configs) all need the
same strictness and the same loading, but neither ``stages/`` nor ``model_hooks/`` may
import ``pipeline/``, and ``model_hooks/`` may not import a stage (DESIGN.md, "Who may
import whom"). This module imports only pydantic and PyYAML, so all three can use it.

* ``StrictModel``: unknown keys are errors (a typo is not a silently ignored key),
  values are immutable, and each field's docstring is its documentation (``python -m
  pipeline schema`` prints it).
* ``read_yaml(path)``: a mapping from a YAML (or JSON) file with ``safe_load``'s types
  only, bounded in depth, size, integer length and tags, without anchors or duplicate
  keys; ``validate_yaml(path, Schema)`` validates it. Every failure is a ``ConfigError``
  whose message names the file, the key path and what was expected.
* ``check_safe_name``: the validator of a config value that becomes part of a written
  path (a phase or component name), shared by ``stages/mix.py`` and ``pipeline/``.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message says where and why."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable, and
    each field's docstring is its documentation."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A name that becomes part of a written path (phase, component): letters, digits,
``.``, ``_`` and ``-``, starting with a letter or digit, so never ``..``, ``/``, a
leading dot (hidden) or dash (an option), a space or a control character."""
SAFE_NAME = re.compile(SAFE_NAME_PATTERN)
SAFE_NAME_RULE = (
    "letters, digits, '.', '_' and '-' only, starting with a letter or digit,"
    " at most 128 characters"
)


def check_safe_name(value: str) -> str:
    """Pydantic validator body: ``value`` unchanged, or ValueError naming the rule."""
    if not SAFE_NAME.match(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not a safe name ({SAFE_NAME_RULE})")
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
