"""`assetmint keys ...` and `assetmint safety eval`: signing keys, watermark secret, the image filters' calibration."""

from __future__ import annotations

import argparse
import json
import os
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
    """Show the development signing keys and the development watermark secret's fingerprints."""
    from policies.signing import SigningPolicy
    from tasks.provenance.keys import show_dev_keys
    from tasks.provenance.mark_secrets import dev_secret_path, load_mark_secrets

    _print_keys(show_dev_keys(), "found")
    path = dev_secret_path()
    if not os.path.lexists(path):
        print(f"no DEVELOPMENT watermark secret in {path.parent} yet (the first run creates it)")
        return 0
    marks = load_mark_secrets(SigningPolicy(), create=False)
    print(f"DEVELOPMENT watermark secret (fingerprints only) in {path.parent}")
    print(f"  {'current':>12}: {marks.current.fingerprint}")
    print(f"  {'retired':>12}: {', '.join(s.fingerprint for s in marks.retired) or 'none'}")
    return 0


def cmd_keys_rotate_watermark_secret(args: argparse.Namespace) -> int:
    """Make a new development watermark secret current, keeping the old one to decode older assets."""
    from tasks.provenance.mark_secrets import dev_secret_path, rotate_dev_secret

    path = dev_secret_path()
    had_one = os.path.lexists(path)
    marks = rotate_dev_secret()
    old = marks.retired[0].fingerprint if had_one else None
    print(f"rotated the DEVELOPMENT watermark secret in {path.parent}")
    print(f"  {'old':>12}: {old or 'none (there was no secret to retire)'}")
    print(f"  {'new':>12}: {marks.current.fingerprint}")
    if old:
        print(
            f"new assets are marked with {marks.current.fingerprint}; assets marked before still verify while "
            f"{path.name}.retired-{old} is kept: keep it for audits"
        )
    return 0


def _print_keys(keys: Any, verb: str) -> None:
    print(f"{verb} DEVELOPMENT signing keys (untrusted for production) in {keys.directory}")
    for name in ("subject", "algorithm", "not_after", "fingerprint", "chain", "key", "trust_anchor"):
        print(f"  {name:>12}: {getattr(keys, name)}")
