"""The demo models' domain and tooling: captioned shape scenes, a pixel checker, training, evaluation, model cards."""

from pathlib import Path

from tasks.core.errors import ModelError

TRAINING_RECORD = "training.json"  # written by the training flow into each model folder
EVALUATION_RECORD = "evaluation.json"  # written by `assetmint models eval --write-cards`
PIPELINE_DIR, CLIP_DIR = "shapes-sd", "shapes-clip"
_MARKERS = {PIPELINE_DIR: "model_index.json", CLIP_DIR: "open_clip_config.json"}


def model_folder(root: Path, name: str) -> Path:
    """``root/name`` for a demo model folder name (shapes-sd or shapes-clip); ModelError when its files are missing."""
    folder = root / name
    if not (folder / _MARKERS[name]).is_file():
        raise ModelError(f"{folder} has no {_MARKERS[name]}; it is not a trained {name} folder.")
    return folder
