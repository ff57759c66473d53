"""The `execution` section of a policy: where generation runs (this process, or actors on a Ray cluster)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExecutionPolicy(BaseModel):
    """Which engine renders a run's generation chunks."""

    model_config = ConfigDict(extra="forbid")
    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: this process generates the chunks one after another. ray: generator actors on a Ray "
        "cluster render the chunks in parallel, each keeping its models loaded; this process stores the images and "
        "writes the ledger (needs `pip install 'assetmint[ray]'`).",
    )
    address: str = Field(
        "auto",
        max_length=512,
        description="The Ray cluster: 'auto' (RAY_ADDRESS, else the cluster `ray start` runs on this machine), "
        "'HOST:PORT' of its head (GCS port, 6379 by default) or 'ray://HOST:10001' (Ray Client).",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Generator actors; by default as many as the cluster's GPUs allow at gpus_per_worker each, or "
        "as its CPUs allow at cpus_per_worker each when gpus_per_worker is 0.",
    )
    gpus_per_worker: float = Field(
        1.0, ge=0.0, le=16.0, description="GPUs each generator actor reserves (0: CPU generation)."
    )
    cpus_per_worker: float = Field(1.0, gt=0.0, le=256.0, description="CPUs each generator actor reserves.")
    max_restarts: int = Field(
        3,
        ge=0,
        le=100,
        description="How often Ray restarts a generator whose process or node died; its chunk in flight is retried "
        "on the restarted actor.",
    )
    start_timeout_s: float = Field(
        300.0,
        gt=0.0,
        le=3600.0,
        description="Seconds the cluster may take to place every generator (free GPUs and CPUs) before the run is "
        "refused.",
    )
    connect_timeout_s: float = Field(
        30.0, gt=0.0, le=600.0, description="Seconds the cluster's head may take to accept a connection."
    )

    @field_validator("address")
    @classmethod
    def _address_shape(cls, value: str) -> str:
        value = value.strip()
        if value == "auto":
            return value
        rest = value.removeprefix("ray://")
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
            raise ValueError(f"{value!r} is not a Ray address; write 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
        return value
