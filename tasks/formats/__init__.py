"""Formats: call strings, type dialects, chat templates and the converters between dataset formats."""
