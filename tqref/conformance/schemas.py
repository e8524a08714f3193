"""JSON schemas of the conformance files, generated from :mod:`tqref.conformance.spec`.

One schema per test type (``<type>_test_schema_v1.json``) plus ``common_v1.json`` with the
shared definitions (tensor, uint64, notes, source). The generator writes them into
``conformance/v1/schemas/``; they use only the JSON-schema keywords that
:mod:`tqref.conformance.schema` implements (draft 2020-12 subset), so any JSON-schema
validator accepts them too.
"""

from __future__ import annotations

from . import spec

DIALECT = "https://json-schema.org/draft/2020-12/schema"
COMMON = "common_v1.json"
FLAG_PATTERN = "^[A-Z][A-Za-z0-9]*$"


def common_schema() -> dict:
    from .encoding import DTYPES

    return {
        "$schema": DIALECT,
        "$id": COMMON,
        "description": "Definitions shared by every tqref conformance schema.",
        "$defs": {
            "Tensor": {
                "description": "An array (or scalar, shape []) of one dtype. hex is normative: the "
                               "row-major elements as little-endian bytes, lowercase hex. dec is "
                               "informative: shortest round-trip decimals (floats as strings).",
                "type": "object",
                "properties": {
                    "dtype": {"description": "element type", "enum": list(DTYPES)},
                    "shape": {"description": "dimensions, [] for a scalar", "type": "array",
                              "items": {"type": "integer", "minimum": 0}},
                    "hex": {"description": "little-endian element bytes", "type": "string",
                            "pattern": "^([0-9a-f]{2})*$"},
                    "dec": {"description": "readable values (absent for large arrays)", "type": "array"},
                },
                "required": ["dtype", "shape", "hex"],
                "additionalProperties": False,
            },
            "Uint64": {"description": "a uint64 as '0x' and 16 lowercase hex digits", "type": "string",
                       "pattern": "^0x[0-9a-f]{16}$"},
            "Source": {
                "description": "the generator that wrote the group",
                "type": "object",
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                "required": ["name", "version"],
                "additionalProperties": False,
            },
            "NoteEntry": {
                "description": "explanation of one flag",
                "type": "object",
                "properties": {
                    "bugType": {"description": "category", "enum": list(spec.BUG_TYPES)},
                    "description": {"description": "what the flag means", "type": "string"},
                },
                "required": ["bugType", "description"],
                "additionalProperties": False,
            },
            "Notes": {
                "description": "flag name -> explanation; exactly the flags used in the file",
                "type": "object",
                "patternProperties": {FLAG_PATTERN: {"$ref": "#/$defs/NoteEntry"}},
                "additionalProperties": False,
            },
            "Result": {"description": "valid: must produce the outputs; invalid: must refuse; acceptable: "
                                      "either the outputs or a refusal", "enum": list(spec.RESULTS)},
            "Flags": {"description": "reasons this test exists (defined in notes)", "type": "array",
                      "items": {"type": "string", "pattern": FLAG_PATTERN}},
        },
    }


def _field_schema(field: spec.Field) -> dict:
    if field.kind == "int":
        return {"description": field.description, "type": "integer", "minimum": 0}
    if field.kind == "u64":
        return {"description": field.description, "$ref": f"{COMMON}#/$defs/Uint64"}
    if field.kind == "string":
        out = {"description": field.description, "type": "string"}
        if field.enum:
            out["enum"] = list(field.enum)
        return out
    if field.kind == "tensor":
        return {"description": field.description,
                "allOf": [{"$ref": f"{COMMON}#/$defs/Tensor"},
                          {"properties": {"dtype": {"enum": list(field.dtypes)}}}]}
    raise ValueError(f"unknown field kind {field.kind!r}")


def type_schema(test_type: spec.TestType) -> dict:
    """The schema of a file holding tests of ``test_type``."""
    test_props = {
        "tcId": {"description": "test id, unique in the file", "type": "integer", "minimum": 1},
        "comment": {"description": "what this test is", "type": "string"},
        "flags": {"$ref": f"{COMMON}#/$defs/Flags"},
        "result": {"$ref": f"{COMMON}#/$defs/Result"},
    }
    test_props.update({k: _field_schema(f) for k, f in test_type.inputs.items()})
    test_props.update({k: _field_schema(f) for k, f in test_type.outputs.items()})
    tolerant = [k for k, f in test_type.outputs.items() if f.compare == "tolerance"]
    if tolerant:
        test_props["tolerance"] = {
            "description": "absolute tolerance per output compared with a tolerance",
            "type": "object",
            "properties": {k: {"type": "number", "minimum": 0} for k in tolerant},
            "additionalProperties": False,
        }
    test_required = ["tcId", "comment", "flags", "result"] + [k for k, f in test_type.inputs.items() if f.required]
    group_props = {
        "type": {"description": "test type", "const": test_type.name},
        "source": {"$ref": f"{COMMON}#/$defs/Source"},
        "comment": {"description": "what the group's parameters are", "type": "string"},
    }
    group_props.update({k: _field_schema(f) for k, f in test_type.group.items()})
    group_props["tests"] = {
        "type": "array",
        "items": {"type": "object", "properties": test_props, "required": test_required,
                  "additionalProperties": False},
    }
    group_required = ["type", "source", "tests"] + [k for k, f in test_type.group.items() if f.required]
    return {
        "$schema": DIALECT,
        "$id": test_type.schema,
        "description": test_type.description,
        "type": "object",
        "properties": {
            "algorithm": {"description": "operation family", "type": "string"},
            "schema": {"description": "this schema's file name", "const": test_type.schema},
            "specVersion": {"description": "version of the vector format and algorithms",
                            "const": spec.SPEC_VERSION},
            "numberOfTests": {"description": "number of tests in the file", "type": "integer", "minimum": 0},
            "header": {"description": "prose lines", "type": "array", "items": {"type": "string"}},
            "notes": {"$ref": f"{COMMON}#/$defs/Notes"},
            "testGroups": {"type": "array", "items": {"type": "object", "properties": group_props,
                                                      "required": group_required,
                                                      "additionalProperties": False}},
        },
        "required": ["algorithm", "schema", "specVersion", "numberOfTests", "header", "notes", "testGroups"],
        "additionalProperties": False,
    }


def all_schemas() -> dict:
    """file name -> schema document, for every registered test type plus common_v1.json."""
    out = {COMMON: common_schema()}
    for test_type in spec.TEST_TYPES.values():
        out[test_type.schema] = type_schema(test_type)
    return out
