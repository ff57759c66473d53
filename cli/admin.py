"""`assetmint keys init|show` and `assetmint safety eval`: signing keys and the image filters' calibration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.console import optional_path


def cmd_safety_eval(args: argparse.Namespace) -> int:
    """Precision, recall, confusion table and threshold sweep of the image filters on a labelled folder."""
    from functools import partial

    from policies.model import load_policy
    from tasks.stages.safety.evaluate import evaluate
    from tasks.stages.score import encode_images, encode_texts, load_scorer

    policy = load_policy(optional_path(args.policy))
    scorer = load_scorer(policy.scoring.clip_model)
    report = evaluate(
        Path(args.folder),
        Path(args.labels),
        policy.safety,
        partial(encode_images, scorer, batch_size=policy.scoring.batch_size),
        partial(encode_texts, scorer),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    """Create development signing keys (untrusted for production) in the user config directory."""
    from tasks.provenance.keys import init_dev_keys

    _print_keys(init_dev_keys(force=args.force, algorithm=args.algorithm), "created")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    """Show the development signing keys."""
    from tasks.provenance.keys import show_dev_keys

    _print_keys(show_dev_keys(), "found")
    return 0


def _print_keys(keys: Any, verb: str) -> None:
    print(f"{verb} DEVELOPMENT signing keys (untrusted for production) in {keys.directory}")
    for name in ("subject", "algorithm", "not_after", "fingerprint", "chain", "key", "trust_anchor"):
        print(f"  {name:>12}: {getattr(keys, name)}")
