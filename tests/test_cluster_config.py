"""``ray_cluster.yaml`` is a valid ``ray up`` config by Ray's own schema and validation,
keeps the dashboard and job API on the head's localhost, sets RAY_AUTH_MODE explicitly
and installs the project with its pinned dependencies."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPO / "ray_cluster.yaml"
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_matches_the_schema_ray_ships(cluster):
    jsonschema.validate(cluster, SCHEMA)


def test_passes_the_validation_ray_up_runs(cluster):
    """``ray up`` merges the provider's defaults, then validates (no cloud call here)."""
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_the_schema_check_has_teeth(cluster):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["cpu_worker"]["min_worker"] = 2  # typo of min_workers
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def _commented_block(text: str, marker: str) -> dict:
    """The YAML commented out under ``# --- <marker>`` (the provider alternatives)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"# --- {marker}"))
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("  # ") or line.strip().startswith("# ---"):
            break
        block.append(line[len("  # ") :])
    return yaml.safe_load("\n".join(block))


@pytest.mark.parametrize("marker", ["GCP", "Machines you already have"])
def test_commented_provider_alternatives_are_valid(cluster, marker):
    provider = _commented_block(CLUSTER_YAML.read_text(), marker)
    assert provider["type"] in ("gcp", "local")
    jsonschema.validate({**cluster, "provider": provider}, SCHEMA)


def test_head_and_autoscaling_cpu_workers(cluster):
    assert cluster["provider"]["type"] == "aws"
    workers = cluster["available_node_types"]["cpu_worker"]
    assert 0 < workers["min_workers"] < workers["max_workers"] <= cluster["max_workers"]
    assert cluster["head_node_type"] == "head"


def test_dashboard_and_job_api_stay_on_localhost(cluster):
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "ray start --head" in head_start
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()


def test_auth_mode_is_explicit_on_every_node(cluster):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        command = " ".join(cluster[key])
        assert re.search(r"RAY_AUTH_MODE=(disabled|token)\b", command), key
        assert "--disable-usage-stats" in command


def test_project_installed_with_its_pins(cluster):
    assert cluster["file_mounts"] == {"~/longcat-curriculum": "."}
    assert ".gitignore" in cluster["rsync_filter"]  # no .venv or run outputs on the wire
    setup = cluster["setup_commands"]
    assert any("pip install -q -c constraints.txt -e ." in command for command in setup)
    pins = dict(
        line.split("==")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    image = cluster["docker"]["image"]
    assert f":{pins['ray']}-py311-" in image, "the image's Ray must be the pinned one"
