"""The web apps: the review workbench and the C2PA soft-binding resolution API."""
