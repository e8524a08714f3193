"""Encodings, canonical text and the self-contained schema validator."""

import json

import numpy as np
import pytest

from tqref.conformance import encoding, schema, schemas, spec


def test_tensor_round_trip_every_dtype():
    for name, np_dtype in encoding.DTYPES.items():
        arr = np.arange(6).reshape(2, 3).astype(np_dtype)
        obj = encoding.tensor(arr, name)
        back = encoding.decode(obj)
        assert back.dtype == np.dtype(np_dtype).newbyteorder("=") and back.shape == (2, 3)
        assert np.array_equal(back, arr)


def test_float_hex_is_little_endian_and_dec_is_readable():
    obj = encoding.tensor(np.array([1.0, -2.0, np.nan, -0.0], np.float32), "float32")
    assert obj["hex"] == "0000803f000000c00000c07f00000080"
    assert obj["dec"] == ["1.0", "-2.0", "nan", "-0.0"]
    assert encoding.tensor(np.float64(0.1), "float64")["dec"] == ["0.1"]


def test_narrowing_that_rounds_is_refused():
    with pytest.raises(ValueError, match="would round"):
        encoding.tensor(np.array([0.1]), "float32")


def test_decode_rejects_wrong_length():
    with pytest.raises(ValueError, match="expected 8"):
        encoding.decode({"dtype": "float32", "shape": [2], "hex": "0000803f"})


def test_large_tensors_omit_dec():
    assert "dec" not in encoding.tensor(np.zeros(encoding.DEC_LIMIT + 1, np.float32), "float32")


def test_canonical_text_keeps_scalar_arrays_on_one_line():
    text = encoding.canonical_text({"a": [1, 2], "b": {"c": "x"}, "d": [{"e": 1}]})
    assert text == '{\n  "a": [1, 2],\n  "b": {\n    "c": "x"\n  },\n  "d": [\n    {\n      "e": 1\n    }\n  ]\n}\n'
    assert json.loads(text) == {"a": [1, 2], "b": {"c": "x"}, "d": [{"e": 1}]}


def test_u64_text():
    assert encoding.u64_text(2**64 - 1) == "0xffffffffffffffff"
    assert encoding.parse_u64("0x0000000000000010") == 16
    with pytest.raises(ValueError):
        encoding.parse_u64("16")


DOCS = schemas.all_schemas()


@pytest.mark.parametrize("value, message", [
    ({"dtype": "float32", "shape": [1], "hex": "00"}, None),
    ({"dtype": "float33", "shape": [1], "hex": "00"}, "expected one of"),
    ({"dtype": "float32", "shape": [1], "hex": "0G"}, "does not match"),
    ({"dtype": "float32", "shape": [-1], "hex": ""}, "below the minimum"),
    ({"dtype": "float32", "shape": [1]}, "missing required member 'hex'"),
    ({"dtype": "float32", "shape": [1], "hex": "", "extra": 1}, "unexpected member 'extra'"),
])
def test_validator_on_tensor_definition(value, message):
    errors = schema.validate(value, {"$ref": "common_v1.json#/$defs/Tensor"}, DOCS)
    if message is None:
        assert errors == []
    else:
        assert any(message in e for e in errors), errors


def test_validator_refuses_unknown_keywords():
    with pytest.raises(ValueError, match="unsupported keywords"):
        schema.validate(1, {"multipleOf": 2}, {})


def test_every_test_type_has_a_schema_and_ops():
    for t in spec.TEST_TYPES.values():
        assert t.schema in DOCS
        for op in t.ops:
            op_spec = spec.OPS[op]
            for name in op_spec.inputs + op_spec.optional_inputs + op_spec.outputs + op_spec.optional_outputs:
                t.field(name)  # raises KeyError when an operation names a field the type lacks


def test_schemas_are_valid_for_a_standard_validator_too(vectors):
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    registry = referencing.Registry().with_resources(
        [(name, referencing.Resource.from_contents(doc)) for name, doc in DOCS.items()])
    for path in sorted(vectors.glob("*_test.json"))[:6]:
        doc = json.loads(path.read_text())
        validator = jsonschema.Draft202012Validator(DOCS[doc["schema"]], registry=registry)
        assert not list(validator.iter_errors(doc)), path.name
        doc["testGroups"][0]["tests"][0]["surprise"] = 1
        assert list(validator.iter_errors(doc)), path.name


def test_protocol_doc_lists_every_operation():
    import pathlib

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "conformance-protocol.md").read_text()
    missing = [op for op in spec.OPS if f"| `{op}` |" not in doc]
    assert not missing, f"docs/conformance-protocol.md does not describe {missing}"
