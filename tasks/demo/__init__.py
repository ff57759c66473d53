"""The demo models' domain and tooling: captioned shape scenes, a pixel checker, training, evaluation, model cards."""

TRAINING_RECORD = "training.json"  # written by the training flow into each model folder
EVALUATION_RECORD = "evaluation.json"  # written by `assetmint models eval --write-cards`
