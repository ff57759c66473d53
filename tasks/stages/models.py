"""Model references: resolve a manifest's model string to a loadable source and a stable identity, without torch."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tasks.core.errors import ModelError
from tasks.core.paths import cache_dir

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".json", ".txt", ".model")


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from, and the identity that goes into candidate ids."""

    ref: str
    location: str
    revision: str | None
    identity: dict[str, Any]
    local: bool


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: Path, skip: frozenset[str] = frozenset()) -> str:
    """sha256 over the relative paths and contents of a model folder's files (cached by size and mtime).

    ``skip`` names files (relative paths) that do not affect the model, such as training records.
    """
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.relative_to(folder).as_posix() not in skip
    )
    if not files:
        raise ModelError(f"model folder {folder} contains no model files (expected e.g. model_index.json).")
    cache_file = cache_dir() / "digests.json"
    try:
        cache: dict[str, str] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    combined = hashlib.sha256()
    changed = False
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        file_digest = cache.get(key)
        if file_digest is None:
            file_digest = _file_sha256(path)
            cache[key] = file_digest
            changed = True
        combined.update(f"{path.relative_to(folder).as_posix()}\0{file_digest}\n".encode())
    if changed:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # the cache only saves time; a read-only cache dir must not stop a run
    return combined.hexdigest()


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or os.sep in ref and Path(ref).expanduser().exists()


def _hub_source(ref: str) -> ModelSource:
    repo_id, _, revision = ref.partition("@")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with diffusers
        raise ModelError(f"cannot resolve model {ref!r}: {exc}.") from None
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, local_files_only=True))
    except HFValidationError:
        raise ModelError(
            f"model {ref!r} is neither an existing folder nor a valid model id ('org/name' or 'org/name@revision')."
        ) from None
    except (LocalEntryNotFoundError, OSError):
        folder = None
    if folder is not None:
        return ModelSource(
            ref=ref,
            location=str(folder),
            revision=folder.name,
            identity={"name": repo_id, "revision": folder.name},
            local=True,
        )
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo_id, revision=revision or None)
    except Exception as exc:  # any hub failure (offline, 404, auth) means the same thing to the user
        raise ModelError(
            f"model {ref!r} is not in the local Hugging Face cache and the hub could not be asked "
            f"({exc.__class__.__name__}); download it where a network exists or use a local folder."
        ) from None
    return ModelSource(
        ref=ref, location=repo_id, revision=info.sha, identity={"name": repo_id, "revision": info.sha}, local=False
    )


def _pipeline_folder(ref: str) -> Path:
    folder = Path(ref).expanduser().resolve()
    if not folder.is_dir():
        raise ModelError(f"model folder {ref!r} does not exist.")
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"model folder {folder} has no model_index.json; it is not a diffusers pipeline folder.")
    return folder


def check_model_reference(ref: str) -> None:
    """Refuse what cannot resolve, touching nothing: an unknown embedded name, a folder that is not a pipeline.

    Hub ids are left to `resolve_model`, which may need the network to say.
    """
    from tasks.stages import embedded

    if embedded.is_embedded(ref):
        embedded.check_embedded(ref, "pipeline")
    elif _looks_like_path(ref):
        _pipeline_folder(ref)


def resolve_model(ref: str) -> ModelSource:
    """Resolve 'embedded:NAME', a local pipeline folder, or a hub model id to a ModelSource."""
    from tasks.stages import embedded

    if embedded.is_embedded(ref):
        embedded.check_embedded(ref, "pipeline")  # before building anything: a CLIP name is refused, not built
        folder = cast(Path, embedded.resolve_embedded(ref))
        marker = embedded.read_marker(folder) or {}
        # The marker's weights digest ignores library versions written into configs, so ids survive upgrades;
        # a shipped model's training and evaluation records are not part of what makes its pixels.
        digest = marker.get("weights_sha256") or folder_digest(folder, skip=embedded.RECORD_FILES)
        return ModelSource(
            ref=ref, location=str(folder), revision=None, identity={"name": ref, "digest": digest}, local=True
        )
    if _looks_like_path(ref):
        folder = _pipeline_folder(ref)
        return ModelSource(
            ref=ref,
            location=str(folder),
            revision=None,
            identity={"name": folder.name, "digest": folder_digest(folder)},
            local=True,
        )
    return _hub_source(ref)
