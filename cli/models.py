"""`assetmint models init|train|eval`: the embedded models — build the tiny ones, train and measure the demo pair."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.console import make_console, stage_bars
from cli.prefect_server import start_prefect
from tasks.core.errors import AssetMintError


def add_models_commands(subparsers: Any) -> None:
    """Register `assetmint models init`, `models train` and `models eval`."""
    models = subparsers.add_parser("models", help="the embedded models: build, train, evaluate")
    sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = sub.add_parser("init", help="build the tiny random embedded models (tiny-sd, tiny-clip) into the user cache")
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    p.set_defaults(handler=cmd_models_init)
    help_text = "train the demo text-to-image model and CLIP on the synthetic shapes domain (about an hour on 2 cores)"
    p = sub.add_parser("train", help=help_text, description=help_text)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write shapes-sd/ and shapes-clip/ into")
    p.add_argument("--recipe", default="full", help="recipe in tasks/demo/data/recipe.yaml: full (default) or quick")
    p.add_argument("--only", choices=["pipeline", "clip"], help="train one model (same weights as in a full run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device to train on: cpu (default), cuda, cuda:N or mps")
    p.set_defaults(handler=cmd_models_train)
    help_text = "measure the demo models on held-out data (CLIP caption pick, checker match, rank correlation)"
    p = sub.add_parser("eval", help=help_text, description=help_text)
    p.add_argument("--models", metavar="DIR", help="folder holding shapes-sd/ and shapes-clip/ (default: the shipped)")
    p.add_argument("--quick", action="store_true", help="a small sample (for a smoke check, not for the cards)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--write-cards", action="store_true", help="record the figures in the folders' model cards")
    p.set_defaults(handler=cmd_models_eval)


def cmd_models_init(args: argparse.Namespace) -> int:
    """Build the tiny random embedded models into the user cache."""
    from tasks.stages.embedded import build_all

    for name, path in build_all(force=args.force).items():
        print(f"{name}: {path}")
    return 0


def cmd_models_train(args: argparse.Namespace) -> int:
    """Run the training flow with one progress bar per stage; the recipe is checked before anything starts."""
    import torch

    from flows.train_demo import train_demo_models_flow
    from tasks.demo import CLIP_DIR, PIPELINE_DIR
    from tasks.demo.train import check_device, load_recipe

    try:
        load_recipe(args.recipe)
        check_device(args.device)
    except ValueError as exc:
        raise AssetMintError(str(exc)) from None
    out = Path(args.out).expanduser()
    targets = {"pipeline": out / PIPELINE_DIR, "clip": out / CLIP_DIR}
    for name, folder in targets.items():
        if args.only in (None, name) and folder.exists() and any(folder.iterdir()):
            raise AssetMintError(f"{folder} is not empty; give another --out (nothing was overwritten).")
    if args.threads is not None:
        if args.threads < 1:
            raise AssetMintError(f"--threads must be at least 1, got {args.threads}.")
        torch.set_num_threads(args.threads)
    start_prefect()
    with stage_bars(make_console(), rate=False, eta=True, label_width=11):
        folders = train_demo_models_flow(out_dir=str(out), recipe=args.recipe, only=args.only, device=args.device)
    for name, folder in folders.items():
        print(f"{name}: {folder}")
    print(f"next: assetmint models eval --models {out} --write-cards")
    return 0


def _model_folders(models: str | None) -> tuple[Path, Path]:
    from tasks.demo import CLIP_DIR, PIPELINE_DIR, model_folder
    from tasks.stages.embedded import SHIPPED_MODELS

    root = Path(models).expanduser() if models else SHIPPED_MODELS
    return model_folder(root, PIPELINE_DIR), model_folder(root, CLIP_DIR)


def format_report(report: dict[str, Any]) -> list[str]:
    """The evaluation figures as printable lines, one column per held-out set, with the issue's targets."""
    from tasks.demo.cards import MEASURES, format_measure, meets

    names = list(report["sets"])
    width = max(len(label) for _, label, _ in MEASURES)
    lines = [" " * width + "".join(f"{n:>16}" for n in names) + "   target"]
    for key, label, target in MEASURES:
        values = "".join(f"{format_measure(key, report['sets'][n].get(key)):>16}" for n in names)
        missed = [n for n in names if target and not meets(target, report["sets"][n].get(key))]
        lines.append(f"{label:{width}}{values}   {target}" + (f"  below on {', '.join(missed)}" if missed else ""))
    for name in names:
        kinds = report["sets"][name]["clip_pick_by_kind"]
        lines.append(
            f"{name}: CLIP prefers the true caption, by kind of change: "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in kinds.items())
        )
    return lines


def cmd_models_eval(args: argparse.Namespace) -> int:
    """Evaluate the demo models on held-out data and print the figures; optionally record them in the cards."""
    from tasks.core.files import write_atomic
    from tasks.demo.cards import write_cards
    from tasks.demo.evaluate import EvalSettings, evaluate

    pipeline_dir, clip_dir = _model_folders(args.models)
    if args.quick and args.write_cards:
        raise AssetMintError("--write-cards needs the full evaluation; drop --quick.")
    settings = EvalSettings()
    if args.quick:
        settings = EvalSettings(clip_images=50, generation_prompts=20, ranking_prompts=8, ranking_seeds=3, steps=20)
    report = evaluate(pipeline_dir, clip_dir, settings).as_dict()
    for line in format_report(report):
        print(line)
    if args.json:
        write_atomic(Path(args.json), json.dumps(report, indent=2).encode() + b"\n")
    if args.write_cards:
        write_cards(pipeline_dir, clip_dir, report)
        print(f"model cards updated: {pipeline_dir / 'README.md'}, {clip_dir / 'README.md'}")
    return 0
