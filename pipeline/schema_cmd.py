"""``python -m pipeline schema curate|tokenize|mix|train|quality``: a config file's schema
as YAML with every key's default, type and the first line of its docstring.

Printed from the pydantic models the commands validate with, so it cannot drift from
what they accept. Nested sections are expanded; a section that is ``null`` by default
(a stage switched off) is shown commented out, with the keys it takes when set.
"""

from __future__ import annotations

import json
import re
import types
import typing
from importlib import import_module

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# command -> (module, model): the model each command loads its YAML into
SCHEMAS = {
    "curate": ("pipeline.config", "CurateConfig"),
    "tokenize": ("pipeline.tokenizing", "TokenizeRunConfig"),
    "mix": ("pipeline.mix_config", "MixConfig"),
    "train": ("pipeline.train_cmd", "TrainRunConfig"),
    "quality": ("pipeline.train_quality", "TrainQualityConfig"),
}


def schema_model(command: str) -> type[BaseModel]:
    module, name = SCHEMAS[command]
    return getattr(import_module(module), name)


def _nested_model(annotation: object) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (directly, optionally, or as list items) and whether it
    is a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, tuple) and len(args) >= 1:
        inner, _ = _nested_model(args[0])
        return inner, inner is not None
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            inner, is_list = _nested_model(arg)
            if inner is not None:
                return inner, is_list
    return None, False


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text)  # pipeline.config.InputSpec -> InputSpec


def _scalar(value: object) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, default=str)


def render_schema(model: type[BaseModel], indent: int = 0, commented: bool = False) -> list[str]:
    """YAML lines for ``model``'s fields: ``key: default  # type: first docstring line``."""
    lines: list[str] = []
    pad = "  " * indent
    hash_ = "# " if commented else ""
    for name, field in model.model_fields.items():
        doc = (field.description or "").strip().splitlines()
        note = f"{_type_name(field.annotation)}" + (f": {doc[0]}" if doc else "")
        required = field.default is PydanticUndefined and field.default_factory is None
        nested, is_list = _nested_model(field.annotation)
        if nested is not None:
            default = None if required else field.get_default(call_default_factory=True)
            off = default is None and not required and not is_list
            optional = type(None) in typing.get_args(field.annotation)
            state = "required; " if required else ""
            if off:
                state = "null by default (off); when set: "
            elif optional and not is_list:
                state = "null switches it off; "
            lines.append(f"{pad}{hash_}{name}:  # {state}{note}")
            if is_list:
                lines.append(f"{pad}{hash_}  -  # each item:")
            lines += render_schema(nested, indent + 1 + is_list, commented or off)
            continue
        value = "<required>" if required else _scalar(field.get_default(call_default_factory=True))
        lines.append(f"{pad}{hash_}{name}: {value}  # {note}")
    return lines


def schema_command(command: str) -> int:
    model = schema_model(command)
    print(f"# {command}: {model.__name__} ({model.__module__}); unknown keys are errors")
    print("\n".join(render_schema(model)))
    return 0
