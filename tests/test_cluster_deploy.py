"""The cluster deploy files agree with each other and with the package: image, GPUs, volumes, env, versions."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from conftest import REPO

CLUSTER = REPO / "deploy" / "cluster"


def _dockerfile() -> tuple[str, dict[str, str], dict[str, str]]:
    """The Dockerfile's text (continuations joined), its ARG defaults and its ENV values."""
    text = (CLUSTER / "Dockerfile").read_text().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    return text, args, env


def _raycluster() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "raycluster.yaml").read_text())


def _pods(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    spec = cluster["spec"]
    return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


def _work_pool() -> dict[str, Any]:
    return json.loads((CLUSTER / "prefect-work-pool.json").read_text())


def _under(path: str, folder: str) -> bool:
    return Path(path) == Path(folder) or Path(folder) in Path(path).parents


def test_the_image_installs_the_package_with_ray_and_cuda_torch_and_runs_as_a_user() -> None:
    text, args, env = _dockerfile()
    assert re.search(r"^FROM python:3\.11", text, re.M), "the image's Python must be the one Ray drivers use"
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for top in sorted({name.split(".")[0] for name in packages}):
        assert re.search(rf"^COPY {top} \./{top}$", text, re.M), f"the image does not copy the {top} package"
    assert re.search(r'pip install "\.\[ray\]" "ray\[default\]==\$\{RAY_VERSION\}"', text)
    assert re.search(r'--index-url "\$\{TORCH_INDEX\}" torch', text) and "/whl/cu12" in args["TORCH_INDEX"]
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    volumes = json.loads(re.search(r"^VOLUME (.+)$", text, re.M).group(1))
    assert volumes == ["/models"]
    assert _under(env["ASSETMINT_CACHE_DIR"], "/models") and _under(env["HF_HOME"], "/models")
    assert env["HF_HUB_OFFLINE"] == "1"


def test_the_raycluster_gives_gpu_workers_the_image_the_gpus_and_the_model_volume() -> None:
    cluster = _raycluster()
    _, args, image_env = _dockerfile()
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["spec"]["rayVersion"] == args["RAY_VERSION"], "the image and the cluster must run one Ray"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "generators must not land on the head"
    images = {c["image"] for pod in _pods(cluster) for c in pod["containers"]}
    assert len(images) == 1
    claim = yaml.safe_load((CLUSTER / "models-pvc.yaml").read_text())["metadata"]["name"]
    gpu_groups = [g for g in cluster["spec"]["workerGroupSpecs"] if "num-gpus" in g["rayStartParams"]]
    assert gpu_groups, "no GPU worker group"
    for group in gpu_groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] >= 1
        assert int(group["rayStartParams"]["num-gpus"]) == limits["nvidia.com/gpu"], "Ray must see the pod's GPUs"
        env = {e["name"]: e["value"] for e in container["env"]}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        models = mounts["models"]
        assert models["readOnly"] is True and volumes["models"]["persistentVolumeClaim"]["claimName"] == claim
        for name in ("ASSETMINT_CACHE_DIR", "HF_HOME"):
            assert env[name] == image_env[name] and _under(env[name], models["mountPath"]), name
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and mounts["dshm"]["mountPath"] == "/dev/shm"


def test_the_work_pool_runs_flows_in_the_image_against_the_clusters_head_with_the_cluster_policy() -> None:
    from policies.model import load_policy

    pool, cluster = _work_pool(), _raycluster()
    variables = pool["variables"]["properties"]
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(pool["job_configuration"])))
    assert used <= set(variables), f"placeholders without a variable: {used - set(variables)}"
    images = {c["image"] for pod in _pods(cluster) for c in pod["containers"]}
    assert {variables["image"]["default"]} == images
    env = variables["env"]["default"]
    head_ports = {
        p["name"]: p["containerPort"]
        for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert env["RAY_ADDRESS"] == f"ray://{cluster['metadata']['name']}-head-svc:{head_ports['client']}"

    pod = pool["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "{{ image }}" and container["env"] == "{{ env }}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["ASSETMINT_WORK_DIR"] == mounts["work"] and _under(env["ASSETMINT_POLICY"], mounts["policy"])
    assert Path(env["ASSETMINT_POLICY"]).name == "policy.yaml"

    policy = load_policy(CLUSTER / "policy.yaml")  # what the ConfigMap holds
    assert policy.execution.engine == "ray" and policy.execution.address == "auto"  # auto reads RAY_ADDRESS
    assert policy.execution.gpus_per_worker == 1 and policy.ledger_url().startswith("postgresql+psycopg://")
    assert policy.work_dir == env["ASSETMINT_WORK_DIR"]
    gpu_group = next(g for g in cluster["spec"]["workerGroupSpecs"] if "num-gpus" in g["rayStartParams"])
    cpus = int(gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert policy.execution.cpus_per_worker <= cpus, "a generator must fit on one GPU node"
