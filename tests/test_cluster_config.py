"""cluster.yaml is a valid Ray cluster-launcher config and keeps the project's rules.

Validation is offline: ``prepare_config`` only merges ``ray/autoscaler/aws/defaults.yaml`` and
checks docker/min-max fields; ``validate_config`` checks against ``ray/autoscaler/ray-schema.json``.
Neither calls AWS (the AWS bootstrap, which does, runs only in ``ray up``); a guard below makes any
network connection fail the test. Both are private Ray APIs (``ray.autoscaler._private.util``).
"""

from __future__ import annotations

import copy
import re
import socket
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
GPU_INSTANCE = re.compile(r"^(g6|p4d)\.")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any socket connection (AWS API, metadata service, docker hub) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"cluster config validation tried to connect: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture()
def prepared(raw) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def worker_types(config: dict) -> dict:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def test_prepare_and_validate_offline(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"
    assert prepared["provider"]["cache_stopped_nodes"] is False
    assert prepared["file_mounts"] == {}
    assert prepared["auth"]["ssh_user"] == "ubuntu"


def test_file_has_no_keys_filled_by_defaults_only(raw, prepared):
    # prepare_config merges AWS defaults for missing top-level keys; the file must state the ones we rely on.
    for key in ("cluster_name", "max_workers", "idle_timeout_minutes", "docker", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in raw, key


def test_head_takes_no_work(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    assert head["node_config"]["ImageId"].startswith("ami-")


def test_workers_are_spot_gpu_and_scale_from_zero(prepared):
    workers = worker_types(prepared)
    assert set(workers) == {"gpu_g6", "gpu_p4d"}
    for name, spec in workers.items():
        node = spec["node_config"]
        assert spec["min_workers"] == 0, name
        assert 0 < spec["max_workers"] <= prepared["max_workers"], name
        assert node["InstanceMarketOptions"]["MarketType"] == "spot", name
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}", node["ImageId"]), name
        assert GPU_INSTANCE.match(node["InstanceType"]), name
        assert spec["resources"].get("GPU", 1) >= 1, name
    assert workers["gpu_g6"]["node_config"]["InstanceType"] == "g6.xlarge"
    assert workers["gpu_p4d"]["node_config"]["InstanceType"] == "p4d.24xlarge"
    assert workers["gpu_p4d"]["resources"]["GPU"] == 8


def test_docker_image_matches_installed_ray(prepared):
    docker = prepared["docker"]
    assert docker["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert "ray-ml" not in docker["image"]
    assert docker["container_name"]
    assert "--ulimit nofile=65536:65536" in docker["run_options"]


def test_setup_installs_pyproject_dependencies_with_same_pins(prepared):
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    commands = " ".join(prepared["setup_commands"])
    for dep in deps:
        if dep.startswith("ray"):
            continue  # comes with the image, pinned by the image tag
        assert f'"{dep}"' in commands, f"setup_commands lacks {dep!r} (pyproject.toml drifted?)"


def test_start_commands_are_standard(prepared):
    head = " ".join(prepared["head_start_ray_commands"])
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert prepared["head_start_ray_commands"][0] == "ray stop"
    assert "--head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert prepared["worker_start_ray_commands"][0] == "ray stop"
    assert "--address=$RAY_HEAD_IP:6379" in worker


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c.__setitem__("idle_timeout_minute", c.pop("idle_timeout_minutes")), id="top-level-typo"),
        pytest.param(lambda c: c["docker"].__setitem__("run_option", c["docker"].pop("run_options")), id="docker-typo"),
        pytest.param(lambda c: c["available_node_types"]["gpu_g6"].__setitem__("min_worker", 0), id="node-type-typo"),
        pytest.param(lambda c: c["available_node_types"]["gpu_p4d"].pop("resources"), id="node-type-no-resources"),
    ],
)
def test_mutated_config_fails_validation(raw, mutate):
    config = copy.deepcopy(raw)
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))
