"""The `assetmint` command line: parses arguments, calls flows and ledger queries, prints results."""
