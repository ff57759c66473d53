"""The pipeline stages as plain functions: generate, score, screen, select, approve, finalize, replay."""
