"""AssetMint Prefect flows and the command-line entry point."""
