"""Whether a JSON Schema is itself valid (Draft 2020-12 meta-schema), with a readable reason."""

from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import urljoin

import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema_specifications import REGISTRY as META_REGISTRY

from toolace.safe_patterns import META_FORMAT_CHECKER, PatternError, schema_hazard

# The shared checker's memory is bounded: it starts afresh past this many remembered nodes.
MAX_REMEMBERED = 200_000


# What the Draft 2020-12 meta-schema asks of a keyword's value, for checking a schema one node at a time (see
# SchemaChecker): a subschema, a map or a list of subschemas, any string, any array, or anything at all.
_META_SUBSCHEMA = frozenset({"items", "contains", "additionalProperties", "propertyNames", "if", "then", "else", "not",
                             "unevaluatedItems", "unevaluatedProperties", "contentSchema"})
_META_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs", "definitions",
                                  "dependencies"})
_META_SUBSCHEMA_LISTS = frozenset({"prefixItems", "allOf", "anyOf", "oneOf"})
_META_ANY_STRING = frozenset({"title", "description", "$comment", "format", "contentEncoding", "contentMediaType"})
_META_ANY_ARRAY = frozenset({"enum", "examples"})
_META_ANYTHING = frozenset({"const", "default"})


@functools.cache
def _meta_validator() -> Draft202012Validator:
    """The validator ``Draft202012Validator.check_schema`` uses, with the pattern rule of :mod:`toolace.safe_patterns`
    for the ``regex`` format (a schema's patterns must have a linear-time matcher)."""
    meta = Draft202012Validator.META_SCHEMA
    return Draft202012Validator(meta, format_checker=META_FORMAT_CHECKER)


def _message(error: Any) -> str:
    """A meta-schema error's message; a pattern's names the pattern and why it has no linear-time matcher."""
    return str(error.cause) if isinstance(error.cause, PatternError) else error.message


@functools.cache
def _meta_keywords() -> frozenset[str] | None:
    """The keywords the Draft 2020-12 meta-schema and its vocabularies constrain (None if they cannot be read):
    any other keyword may hold anything."""
    meta = Draft202012Validator.META_SCHEMA
    try:
        known = set(meta.get("properties") or {})
        for part in meta.get("allOf") or []:
            known |= set(META_REGISTRY.contents(urljoin(meta["$id"], part["$ref"])).get("properties") or {})
    except (KeyError, TypeError, AttributeError, referencing.exceptions.NoSuchResource):
        return None
    return frozenset(known)


class SchemaChecker:
    """``Draft202012Validator.check_schema`` for many schemas that share parts, with the same verdict.

    The meta-schema checks each keyword on its own and every subschema against itself, so a schema is valid when
    each node is valid with its subschemas replaced by ``true`` (and what the meta-schema does not look at: property
    names, description texts, enum values ... replaced by placeholders) and each subschema is valid. A node is
    checked once per object (the subtrees resolved ``$ref``s share) and that reduced node once per content.
    """

    def __init__(self) -> None:
        self.by_id: dict[int, tuple[Any, str | None]] = {}  # the node is kept so that its id is not reused
        self.by_content: dict[str, str | None] = {}
        self.known = _meta_keywords()

    def problem(self, *schemas: Any) -> str | None:
        """Why the first invalid schema is not valid JSON Schema, or None."""
        for schema in schemas:
            found = self._check(schema) if isinstance(schema, dict) else self._check_node(schema)
            if found is not None:
                return f"not a valid JSON Schema: {found}"
        return None

    def _check(self, node: dict[str, Any]) -> str | None:
        memo = self.by_id.get(id(node))
        if memo is not None and memo[0] is node:
            return memo[1]
        reduced, children = self._reduce(node)
        found = self._check_node(reduced)
        if found is None:
            for child in children:
                if (found := self._check(child)) is not None:
                    break
        self.by_id[id(node)] = (node, found)
        return found

    def _reduce(self, node: dict[str, Any]) -> tuple[dict[Any, Any], list[dict[str, Any]]]:
        """The node with the same verdict on its own keywords, and its subschemas to check."""
        reduced: dict[Any, Any] = {}
        children: list[dict[str, Any]] = []
        for key, value in node.items():
            if key in _META_SUBSCHEMA and isinstance(value, dict | bool):
                reduced[key] = True
                if isinstance(value, dict):
                    children.append(value)
            elif key in _META_SUBSCHEMA_MAPS and isinstance(value, dict):
                kept: dict[Any, Any] = {}
                for name, sub in value.items():
                    if isinstance(sub, dict | bool):
                        if isinstance(sub, dict):
                            children.append(sub)
                        if key == "patternProperties":  # its names must be regular expressions
                            kept[name] = True
                    else:
                        kept[name] = sub
                reduced[key] = kept
            elif key in _META_SUBSCHEMA_LISTS and isinstance(value, list):
                reduced[key] = [True if isinstance(sub, dict | bool) else sub for sub in value]
                children.extend(sub for sub in value if isinstance(sub, dict))
            elif key in _META_ANY_STRING and isinstance(value, str):
                reduced[key] = ""
            elif key in _META_ANY_ARRAY and isinstance(value, list):
                reduced[key] = []
            elif key == "required" and isinstance(value, list) and all(isinstance(r, str) for r in value) \
                    and len(set(value)) == len(value):
                reduced[key] = []
            elif key in _META_ANYTHING or (self.known is not None and key not in self.known):
                continue
            else:
                reduced[key] = value
        return reduced, children

    def _check_node(self, node: Any) -> str | None:
        try:
            key: str | None = json.dumps(node)
        except (TypeError, ValueError):  # a value JSON has no type for (a YAML date): checked, not remembered
            key = None
        if key is not None and key in self.by_content:
            return self.by_content[key]
        error = next(_meta_validator().iter_errors(node), None)
        found = _message(error) if error is not None else None
        if key is not None:
            self.by_content[key] = found
        return found


_shared: SchemaChecker | None = None


def _checker() -> SchemaChecker:
    global _shared
    if _shared is None or len(_shared.by_id) + len(_shared.by_content) > MAX_REMEMBERED:
        _shared = SchemaChecker()
    return _shared


def schema_problem(schema: Any) -> str | None:
    """None for a valid, safe JSON Schema, else the most relevant problem (with its path).

    A hazard of :func:`toolace.safe_patterns.schema_hazard` comes first (a pattern without a linear-time matcher, a
    recursive or dangling ``$ref``, subschemas nested too deep). Valid schemas, the common case, are confirmed by the
    node-at-a-time :class:`SchemaChecker` (parts shared between schemas are checked once); only an invalid one is
    validated whole, for its path."""
    if not isinstance(schema, dict):
        return f"is a {type(schema).__name__}, not a JSON Schema object"
    if hazard := schema_hazard(schema):
        return hazard
    found = _checker().problem(schema)
    if found is None:
        return None
    error = best_match(_meta_validator().iter_errors(schema))
    if error is None:
        return found.removeprefix("not a valid JSON Schema: ")
    where = "/".join(str(p) for p in error.absolute_path)
    return _message(error) + (f" (at {where})" if where else "")
