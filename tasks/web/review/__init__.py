"""The review web app: a token-protected contact sheet where reviewers approve or reject candidates."""
