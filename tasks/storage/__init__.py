"""Storage: the ledger, the work directory and the publish targets (folder, S3)."""
