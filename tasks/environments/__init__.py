"""Executable environments: stateful tools whose calls are run by the platform, never by model-written code."""
