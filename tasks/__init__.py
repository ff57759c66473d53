"""AssetMint capabilities: plain functions and small classes, usable without Prefect."""
