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


def test_delivery_deployments_share_one_flow_and_required_parameters_are_typed() -> None:
    from prefect.utilities.callables import parameter_schema

    config = yaml.safe_load((REPO / "deploy/prefect.yaml").read_text())
    entrypoints = {d["name"]: d["entrypoint"] for d in config["deployments"]}
    delivery = "flows/delivery.py:delivery_flow"
    assert entrypoints["delivery"] == entrypoints["finalize"] == entrypoints["publish"] == delivery
    for entrypoint in set(entrypoints.values()):
        path, _, name = entrypoint.partition(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        schema = parameter_schema(flow.fn).model_dump()
        for required in schema.get("required", []):
            spec = schema["properties"][required]
            assert "type" in spec or "anyOf" in spec or "$ref" in spec or "allOf" in spec, f"{entrypoint}: {required}"


def test_deployment_parameters_pass_the_schema_the_server_enforces() -> None:
    from prefect._internal.schemas.validators import validate_values_conform_to_schema
    from prefect.utilities.callables import parameter_schema

    config = yaml.safe_load((REPO / "deploy/prefect.yaml").read_text())
    for deployment in config["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        # What the server checks on `prefect deploy` (required ones come per run): `run_id: null` got a 422.
        validate_values_conform_to_schema(deployment.get("parameters", {}), schema, ignore_required=True)


def test_schedules_that_need_the_users_resources_ship_inactive() -> None:
    config = yaml.safe_load((REPO / "deploy/prefect.yaml").read_text())
    for deployment in config["deployments"]:
        for schedule in deployment.get("schedules") or []:
            assert schedule.get("active") is False, f"{deployment['name']}: a fresh set-up lacks what it needs"


def test_every_deployment_gets_the_code_location_and_the_work_dir() -> None:
    config = yaml.safe_load((REPO / "deploy/prefect.yaml").read_text())
    assert config["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $ASSETMINT_HOME }}"}}
    ]
    readme = (REPO / "README.md").read_text()
    for deployment in config["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        for variable in ("ASSETMINT_HOME", "ASSETMINT_WORK_DIR"):
            assert env[variable] == f"{{{{ ${variable} }}}}", deployment["name"]
            assert variable in readme, f"README does not say what {variable} is"
