"""Evaluation: BFCL data, checker and scoring, and the downstream check."""
