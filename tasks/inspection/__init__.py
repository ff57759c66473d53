"""Inspection: what an image's credential, watermark and ledger record say about it."""
