"""A small JSON-schema validator (no dependency): the draft 2020-12 subset the tqref schemas use.

Keywords: ``$ref`` (``#/pointer`` and ``file.json#/pointer`` within one schema directory),
``allOf``, ``type``, ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties`` (boolean or schema), ``patternProperties``, ``items``, ``pattern``,
``minimum``, ``minItems``. Annotations (``description``, ``$id``, ``$schema``, ``$defs``) are
ignored. An unknown keyword is an error (so a schema never silently checks less than it says).

>>> errors = validate({"a": 1}, {"type": "object", "properties": {"a": {"type": "string"}}}, {})
>>> errors
['$.a: expected type string, got integer']
"""

from __future__ import annotations

import re

_ANNOTATIONS = {"description", "$id", "$schema", "$defs", "title"}
_KEYWORDS = {"$ref", "allOf", "type", "enum", "const", "properties", "required", "additionalProperties",
             "patternProperties", "items", "pattern", "minimum", "minItems"}


#: Python type -> JSON type name, in lookup order (bool before int: True is an int too)
_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
               (dict, "object"), (type(None), "null"))


def _type_name(value) -> str:
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _is_type(value, name: str) -> bool:
    actual = _type_name(value)
    return actual == name or (name == "number" and actual == "integer")


def _resolve(ref: str, base: str, documents: dict):
    """Return (schema, base document name) for ``ref`` relative to document ``base``."""
    file_part, _, pointer = ref.partition("#")
    doc_name = file_part or base
    if doc_name not in documents:
        raise ValueError(f"$ref {ref!r}: unknown schema document {doc_name!r}")
    node = documents[doc_name]
    for part in [p for p in pointer.split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"$ref {ref!r}: no {part!r} in {doc_name}")
        node = node[part]
    return node, doc_name


def _check(value, schema: dict, path: str, base: str, documents: dict, errors: list, limit: int) -> None:
    if len(errors) >= limit:
        return
    unknown = set(schema) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        raise ValueError(f"schema at {path}: unsupported keywords {sorted(unknown)}")
    if "$ref" in schema:
        target, target_base = _resolve(schema["$ref"], base, documents)
        _check(value, target, path, target_base, documents, errors, limit)
    for sub in schema.get("allOf", ()):
        _check(value, sub, path, base, documents, errors, limit)
    if "type" in schema and not _is_type(value, schema["type"]):
        errors.append(f"{path}: expected type {schema['type']}, got {_type_name(value)}")
        return
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: expected one of {schema['enum']}, got {value!r}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        shown = value if len(value) <= 40 else value[:37] + "..."
        errors.append(f"{path}: {shown!r} does not match {schema['pattern']}")
    if _type_name(value) in ("integer", "number") and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: expected at least {schema['minItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{i}]", base, documents, errors, limit)
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{path}: missing required member {name!r}")
        props = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        for key, item in value.items():
            matched = False
            if key in props:
                matched = True
                _check(item, props[key], f"{path}.{key}", base, documents, errors, limit)
            for pattern, sub in patterns.items():
                if re.search(pattern, key):
                    matched = True
                    _check(item, sub, f"{path}.{key}", base, documents, errors, limit)
            if not matched:
                extra = schema.get("additionalProperties", True)
                if extra is False:
                    errors.append(f"{path}: unexpected member {key!r}")
                elif isinstance(extra, dict):
                    _check(item, extra, f"{path}.{key}", base, documents, errors, limit)


def validate(value, schema: dict, documents: dict, *, base: str = "", limit: int = 20) -> list:
    """Errors (at most ``limit``) of ``value`` against ``schema``; [] when it conforms.

    ``documents`` maps schema file names to schema documents (for cross-file ``$ref``);
    ``base`` is the name of the document ``schema`` belongs to.
    """
    errors: list = []
    _check(value, schema, "$", base, documents, errors, limit)
    return errors
