"""Synthetic demo domain: captioned shape scenes and an objective pixel-level checker (groundwork, no training)."""
