"""The domain core: manifests, identities, lifecycle states, typed errors and small shared utilities."""
