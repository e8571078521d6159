"""The one strict config base and the one YAML loader (``strict_config``).

Every pydantic model of the project derives from ``StrictModel``, so a typo in any
config file is an error rather than a silently ignored key; and a model of any package
(stages, model_hooks, pipeline) loaded through ``validate_yaml`` fails with a message
naming the file, the key and what was expected.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from pydantic import BaseModel

from model_hooks.model import ModelConfig
from model_hooks.width_transfer import main as width_transfer_main
from strict_config import ConfigError, StrictModel, read_yaml, validate_yaml

PACKAGES = ("stages", "model_hooks", "pipeline", "report", "demo")


def _project_models() -> list[type[BaseModel]]:
    """Every pydantic model class defined in the project's packages."""
    models = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            if info.name.endswith("__main__"):  # running it is the command itself
                continue
            module = importlib.import_module(info.name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseModel) and value.__module__ == info.name:
                    models.append(value)
    return models


def test_every_config_model_derives_from_the_one_strict_base():
    models = _project_models()
    names = {model.__name__ for model in models}
    # The configs of all three packages are found (the walk is not vacuous).
    assert {"ModelConfig", "TrainConfig", "CurateConfig", "MixConfig", "ExtractConfig"} <= names
    loose = [f"{model.__module__}.{model.__name__}" for model in models
             if not issubclass(model, StrictModel)]  # fmt: skip
    assert loose == []
    for model in models:
        assert model.model_config["extra"] == "forbid", model
        assert model.model_config["frozen"] is True, model


def test_a_model_hooks_config_error_names_file_key_and_expectation(tmp_path: Path):
    path = tmp_path / "model.yaml"
    path.write_text("d_model: wide\nn_layer: 2\n")
    with pytest.raises(ConfigError) as caught:
        validate_yaml(path, ModelConfig)
    message = str(caught.value)
    assert f"{path}: d_model: Input should be a valid integer" in message
    assert f"{path}: n_layer: unknown key" in message


def test_loader_refuses_duplicate_keys_and_names_the_line(tmp_path: Path):
    path = tmp_path / "model.yaml"
    path.write_text("d_model: 64\nd_model: 128\n")
    expected = r"(?s)d_model: not valid YAML.*found duplicate key 'd_model'.*line 2"
    with pytest.raises(ConfigError, match=expected):
        read_yaml(path)


def test_width_transfer_reports_a_bad_proxy_file_with_its_key(tmp_path: Path, capsys):
    proxy = tmp_path / "proxy.yaml"
    proxy.write_text("d_model: 64\nn_heads: [4]\n")
    assert width_transfer_main([str(proxy), "--d-model", "256"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {proxy}: invalid configuration")
    assert f"{proxy}: n_heads: Input should be a valid integer" in error
