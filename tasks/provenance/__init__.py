"""Provenance primitives: the invisible watermark, Content Credentials (C2PA) and signing keys."""
