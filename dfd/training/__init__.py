"""Pieces of the trainer that are not flags or the training loop (dfd.train stays readable)."""
