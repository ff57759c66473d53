"""Generation on a Ray cluster: generator actors keep their models loaded and render chunks; the driver stores them.

Actors, driven from the batch flow's Prefect tasks (one task per chunk), rather than prefect-ray's task runner: a
runner ships each task to a fresh Ray task, which would load the pipeline again for every chunk or rely on a module
cache Ray does not promise to keep; an actor owns its model and its GPU reservation (`num_gpus`) for the whole run.
Workers only compute: each returns its chunk's PNG files, and the driver, which holds the run's lock, writes them
into the candidate store and records them in the ledger. So no two processes ever write a candidate, a worker needs
no access to the store or the database, and a chunk whose worker died is rendered again by Ray on the restarted actor
(max_restarts, max_task_retries) without touching finished chunks.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from policies.execution import ExecutionPolicy
from tasks.core.errors import AssetMintError, ClusterError, ModelError
from tasks.stages.generate import CandidateSpec, RenderedCandidate, choose_runtime, load_pipeline, render_batches
from tasks.stages.models import ModelSource, resolve_model

log = logging.getLogger(__name__)

SLOTS_PER_GENERATOR = 2  # chunks queued on one generator at a time: one rendering, the next waiting

RAY_MISSING = (
    "execution.engine is 'ray' but Ray is not installed here; install it with `pip install 'assetmint[ray]'`, "
    "or set execution.engine: local."
)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(RAY_MISSING) from None
    return ray


def head_address(address: str) -> str:
    """HOST:PORT or ray://HOST:PORT of the cluster; for 'auto', RAY_ADDRESS or the one `ray start` made here."""
    if address != "auto":
        return address
    from_env = os.environ.get("RAY_ADDRESS", "").strip()
    if from_env and from_env != "auto":
        return from_env
    from ray._private.services import canonicalize_bootstrap_address  # how `ray.init("auto")` finds it

    found = canonicalize_bootstrap_address("auto")
    if not found:
        raise ClusterError(
            "execution.address is 'auto', but RAY_ADDRESS is unset and no Ray cluster was started on this machine; "
            "start one with `ray start --head`, or set execution.address to the head's HOST:PORT."
        )
    return str(found)


def probe_head(address: str, timeout_s: float) -> None:
    """Prove the head accepts connections in `timeout_s`; ClusterError otherwise (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster's head at {address} ({getattr(exc, 'strerror', None) or exc}, waited up "
            f"to {timeout_s:g} s); check that `ray start --head` runs there and execution.address. Nothing was run."
        ) from None


_connected: dict[str, str] = {}  # the address this process connected Ray to


def _connected_to(ray: Any, address: str) -> bool:
    """Whether this process's Ray connection is to the cluster at `address`."""
    if address.startswith("ray://") or _connected.get("address", "").startswith("ray://"):
        return _connected.get("address") == address  # a Ray Client connection has no GCS address to compare
    return _same_endpoint(ray.get_runtime_context().gcs_address, address)


def _same_endpoint(first: str, second: str) -> bool:
    """Whether two HOST:PORT name one server: same port, and the same host or two addresses of this machine."""
    (host_a, _, port_a), (host_b, _, port_b) = first.rpartition(":"), second.rpartition(":")
    if port_a != port_b:
        return False
    try:
        ip_a, ip_b = socket.gethostbyname(host_a.strip("[]")), socket.gethostbyname(host_b.strip("[]"))
    except OSError:
        return False
    return ip_a == ip_b or (_is_this_machine(ip_a) and _is_this_machine(ip_b))


def _is_this_machine(ip: str) -> bool:
    try:
        with socket.socket() as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class ClusterPlan:
    """The cluster a run renders on, and how many generator actors it gets."""

    address: str
    workers: int
    gpus: float
    cpus: float


def connect(execution: ExecutionPolicy) -> ClusterPlan:
    """Connect this process to the policy's cluster and check it can host the generators; ClusterError if not."""
    ray = _ray()
    address = head_address(execution.address)
    probe_head(address, execution.connect_timeout_s)
    if ray.is_initialized() and not _connected_to(ray, address):
        ray.shutdown()  # connected to another cluster by an earlier run in this process
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
        _connected["address"] = address
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 0.0))
    if execution.gpus_per_worker > 0 and gpus < execution.gpus_per_worker:
        raise ClusterError(
            f"the policy asks for {execution.gpus_per_worker:g} GPU per generator (execution.gpus_per_worker), but "
            f"the Ray cluster at {address} has {gpus:g} GPUs; add GPU workers to it, or set "
            "execution.gpus_per_worker: 0 to generate on its CPUs. Nothing was run."
        )
    if cpus < execution.cpus_per_worker:
        raise ClusterError(
            f"each generator reserves {execution.cpus_per_worker:g} CPUs (execution.cpus_per_worker), but the Ray "
            f"cluster at {address} has {cpus:g}; lower it or add workers. Nothing was run."
        )
    fits = min(
        int(gpus // execution.gpus_per_worker) if execution.gpus_per_worker > 0 else 1 << 30,
        int(cpus // execution.cpus_per_worker),
    )
    if execution.workers is not None and execution.workers > fits:
        raise ClusterError(
            f"execution.workers is {execution.workers}, but the Ray cluster at {address} ({gpus:g} GPUs, {cpus:g} "
            f"CPUs) fits {fits} generators of {execution.gpus_per_worker:g} GPUs and {execution.cpus_per_worker:g} "
            "CPUs; lower execution.workers or add workers to the cluster. Nothing was run."
        )
    return ClusterPlan(address=address, workers=execution.workers or fits, gpus=gpus, cpus=cpus)


class GeneratorWorker:
    """One generator actor's body: resolves and loads each model once, then renders chunks (in a Ray worker)."""

    def __init__(self, device: str, dtype: str, batch_invariant: str) -> None:
        self._runtime = choose_runtime(device, dtype, batch_invariant)
        self._sources: dict[str, ModelSource] = {}
        self._chunks = 0
        self._render_s = 0.0
        self._first_render_s = 0.0  # the first chunk also loads the model

    def _source(self, ref: str, identity: dict[str, Any]) -> ModelSource:
        source = self._sources.get(ref)
        if source is None:
            source = resolve_model(ref)
            if source.identity != identity:
                raise ModelError(
                    f"model {ref} on worker {socket.gethostname()} is not the one this run planned with (identity "
                    f"{source.identity} here, {identity} on the driver); give every node the same model files."
                )
            self._sources[ref] = source
        return source

    def render(
        self, specs: Sequence[CandidateSpec], identities: dict[str, dict[str, Any]], batch_size: int
    ) -> list[RenderedCandidate]:
        """Render one chunk, one pipeline call per batch of candidates that differ only by seed."""
        began = time.perf_counter()
        rendered: list[RenderedCandidate] = []
        by_model: dict[str, list[CandidateSpec]] = {}
        for spec in specs:
            by_model.setdefault(spec.model_ref, []).append(spec)
        for ref, group in by_model.items():
            loaded = load_pipeline(self._source(ref, identities[ref]), self._runtime)  # once per process
            for batch in render_batches(loaded, group, batch_size):
                rendered += batch
        self._chunks += 1
        self._render_s += time.perf_counter() - began
        if self._chunks == 1:
            self._first_render_s = self._render_s
        return rendered

    def report(self) -> dict[str, Any]:
        """Which process this is, its model loads, chunks and seconds spent rendering them, its peak RSS."""
        loads = load_pipeline.load_counts()  # what the process's load cache actually loaded, by cache key
        return {
            "worker": f"pid {os.getpid()} on {socket.gethostname()}",
            "model_loads": {
                ref: sum(n for key, n in loads.items() if key[0] == source.location)
                for ref, source in self._sources.items()
            },
            "chunks": self._chunks,
            "render_s": round(self._render_s, 3),
            "first_render_s": round(self._first_render_s, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "device": self._runtime.device,
        }


class GeneratorPool:
    """Generator actors on the cluster; `render` queues a chunk on a generator with a free slot.

    Each generator has SLOTS_PER_GENERATOR slots: while it renders one chunk the next is already queued on it, so it
    never waits for the driver to collect a result and send the next chunk.
    """

    def __init__(self, execution: ExecutionPolicy, device: str, dtype: str, batch_invariant: str) -> None:
        self._ray = _ray()
        self.plan = connect(execution)
        actor = self._ray.remote(GeneratorWorker).options(
            num_gpus=execution.gpus_per_worker,
            num_cpus=execution.cpus_per_worker,
            max_restarts=execution.max_restarts,
            max_task_retries=execution.max_restarts,
        )
        self._actors = [actor.remote(device, dtype, batch_invariant) for _ in range(self.plan.workers)]
        try:
            self._ray.get([handle.report.remote() for handle in self._actors], timeout=execution.start_timeout_s)
        except self._ray.exceptions.GetTimeoutError:
            self.close()
            raise ClusterError(
                f"the Ray cluster at {self.plan.address} did not place {self.plan.workers} generators of "
                f"{execution.gpus_per_worker:g} GPUs and {execution.cpus_per_worker:g} CPUs within "
                f"{execution.start_timeout_s:g} s; other jobs may hold its GPUs. Lower execution.workers or free them, "
                "then rerun."
            ) from None
        self._idle: queue.Queue[Any] = queue.Queue()
        for _ in range(SLOTS_PER_GENERATOR):
            for handle in self._actors:
                self._idle.put(handle)
        self._done = 0
        self._count_lock = threading.Lock()

    def render(
        self, specs: Sequence[CandidateSpec], identities: dict[str, dict[str, Any]], batch_size: int
    ) -> list[RenderedCandidate]:
        """Render a chunk on a generator with a free slot (waits for one); the chunk's error, not Ray's wrapper."""
        from ray.exceptions import RayActorError, RayTaskError

        handle = self._idle.get()
        try:
            return list(self._ray.get(handle.render.remote(list(specs), identities, batch_size)))
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, AssetMintError):
                raise cause from None
            raise
        except RayActorError as exc:
            raise ClusterError(
                f"a generator on the Ray cluster at {self.plan.address} died and could not be restarted "
                f"({str(exc).splitlines()[0]}); its chunk of {len(specs)} candidates was not recorded, rerun the same "
                "command to render it."
            ) from None
        finally:
            self._idle.put(handle)

    def count(self, rendered: int) -> int:
        """Add to the candidates rendered so far on this pool and return the new total."""
        with self._count_lock:
            self._done += rendered
            return self._done

    def reports(self) -> list[dict[str, Any]]:
        """Every generator's report (see GeneratorWorker.report)."""
        return list(self._ray.get([handle.report.remote() for handle in self._actors]))

    def close(self) -> None:
        """Stop the generators, freeing their GPUs for the stages that follow."""
        for handle in self._actors:
            self._ray.kill(handle)
        self._actors = []
