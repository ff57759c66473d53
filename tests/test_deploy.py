"""The Prefect deployment file points at real flows with valid parameters."""

from __future__ import annotations

import importlib
import inspect

import yaml

from conftest import REPO


def test_prefect_yaml_entrypoints_resolve_to_flows() -> None:
    config = yaml.safe_load((REPO / "deploy/prefect.yaml").read_text())
    assert config["deployments"], "no deployments declared"
    for deployment in config["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert flow.__class__.__name__ == "Flow", f"{deployment['entrypoint']} is not a Prefect flow"
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment.get("parameters", {})) <= accepted
        assert deployment["work_pool"]["name"]
        if "manifest" in deployment["parameters"]:
            assert (REPO / deployment["parameters"]["manifest"]).is_file()
