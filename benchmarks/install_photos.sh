#!/usr/bin/env bash
# Installs the photographs benchmarks/watermark_robustness.py measures on (see benchmarks/photos.py):
# the Python packages of the bench extra, and the Debian wallpaper packages that hold the held-out photographs.
# Run from the repository root, as root (or with sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e '.[bench]'
apt-get update
apt-get install -y --no-install-recommends mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
python benchmarks/photos.py
