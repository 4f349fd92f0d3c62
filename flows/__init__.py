"""Prefect flows: they compose the stage tasks; the work itself lives in ``tasks``."""
