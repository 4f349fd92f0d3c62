"""Whether a JSON Schema is itself valid (Draft 2020-12 meta-schema), with a readable reason."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

# One validator of the meta-schema, built once: ``check_schema`` builds a new one per call.
_META_VALIDATOR = Draft202012Validator(Draft202012Validator.META_SCHEMA)


def schema_problem(schema: Any) -> str | None:
    """None for a valid JSON Schema, else the most relevant meta-schema error (with its path)."""
    if not isinstance(schema, dict):
        return f"is a {type(schema).__name__}, not a JSON Schema object"
    error = best_match(_META_VALIDATOR.iter_errors(schema))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at {where})" if where else "")
