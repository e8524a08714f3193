"""Check a conformance directory: ``python -m tqref.conformance.lint conformance/v1``.

Checks what the schemas say (every file against the schema it names, using the schemas
shipped in ``schemas/``) and what a schema cannot say:

* index.json lists every vector file, with its test count and SHA-256;
* canonical formatting (the file equals its own canonical re-serialisation);
* one test type per file, matching the schema the file names;
* test ids unique; ``numberOfTests`` equals the real count;
* every flag used is defined in ``notes`` and every note is used;
* valid / acceptable tests carry every required output, invalid tests carry none;
* tensors: hex length = prod(shape) × itemsize; ``dec`` (when present) lists the same values;
* every output compared with a tolerance has one, a finite number ≥ ``tqref.tolerance.FLOOR``
  (a zero tolerance would be an exact comparison in disguise, a negative or NaN one can never
  pass);
* prng_streams.csv: header, row format, and agreement with the generator definition.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pathlib
import re
import sys

import numpy as np

from .. import tolerance
from . import encoding, schema, spec
from .loader import FormatError, load_json

_CSV_ROW = re.compile(r"^0x[0-9a-f]{16},[0-9]+,0x[0-9a-f]{16},0x[0-9a-f]{16}$")


def _tensor_problems(where: str, value) -> list:
    if not isinstance(value, dict) or "hex" not in value:
        return []  # the schema reports it
    try:
        arr = encoding.decode(value)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    if "dec" in value:
        if len(value["dec"]) != arr.size:
            return [f"{where}: dec lists {len(value['dec'])} values, hex holds {arr.size}"]
        if encoding.decimals(arr, value["dtype"]) != value["dec"]:
            return [f"{where}: dec does not match hex"]
    elif arr.size <= encoding.DEC_LIMIT:
        return [f"{where}: dec missing (required up to {encoding.DEC_LIMIT} elements)"]
    return []


def lint_document(name: str, doc, documents: dict, text: str | None = None) -> list:
    """Problems of one parsed vector file (``documents``: schema name -> schema)."""
    problems = []
    if not isinstance(doc, dict):
        return [f"{name}: top level is not an object"]
    schema_name = doc.get("schema")
    if schema_name not in documents:
        return [f"{name}: names unknown schema {schema_name!r}"]
    for err in schema.validate(doc, documents[schema_name], documents, base=schema_name):
        problems.append(f"{name}: schema: {err}")
    if text is not None and encoding.canonical_text(doc) != text:
        problems.append(f"{name}: not in canonical format (hand-edited? regenerate with tqref.conformance.generate)")
    groups = doc.get("testGroups") if isinstance(doc.get("testGroups"), list) else []
    types = {g.get("type") for g in groups if isinstance(g, dict)}
    if len(types) > 1:
        problems.append(f"{name}: several test types in one file: {sorted(map(str, types))}")
    test_type = spec.TEST_TYPES.get(next(iter(types))) if len(types) == 1 else None
    if test_type and test_type.schema != schema_name:
        problems.append(f"{name}: test type {test_type.name} belongs to {test_type.schema}, file names {schema_name}")
    ids, used = [], set()
    for gi, group in enumerate(groups):
        if not isinstance(group, dict):
            continue
        for key, value in group.items():
            if isinstance(value, dict) and "hex" in value:
                problems += _tensor_problems(f"{name}: group {gi}: {key}", value)
        for test in group.get("tests", []) if isinstance(group.get("tests"), list) else []:
            if not isinstance(test, dict):
                continue
            tc = test.get("tcId")
            ids.append(tc)
            where = f"{name}: tcId {tc}"
            flags = test.get("flags", []) if isinstance(test.get("flags"), list) else []
            used.update(f for f in flags if isinstance(f, str))
            for key, value in test.items():
                if isinstance(value, dict) and "hex" in value:
                    problems += _tensor_problems(f"{where}: {key}", value)
            if test_type is None:
                continue
            outputs = [k for k in test_type.outputs if k in test]
            required = set()
            for op_name in test_type.ops:
                required.update(spec.OPS[op_name].outputs)
            if test.get("result") == "invalid":
                if outputs:
                    problems.append(f"{where}: an invalid test carries outputs {outputs}")
            elif test.get("result") in ("valid", "acceptable"):
                missing = sorted(required - set(outputs))
                if missing:
                    problems.append(f"{where}: missing outputs {missing}")
                tol = test.get("tolerance", {})
                for k in outputs:
                    if test_type.outputs[k].compare == "tolerance" and k not in tol:
                        problems.append(f"{where}: output {k!r} is compared with a tolerance but has none")
                for k, value in tol.items():
                    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < tolerance.FLOOR:
                        problems.append(f"{where}: tolerance {k!r} is {value!r}; expected a finite number "
                                        f">= {tolerance.FLOOR!r} (tqref.tolerance.FLOOR)")
    dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if dupes:
        problems.append(f"{name}: duplicate tcIds {dupes}")
    if doc.get("numberOfTests") != len(ids):
        problems.append(f"{name}: numberOfTests is {doc.get('numberOfTests')}, the file holds {len(ids)}")
    notes = doc.get("notes", {}) if isinstance(doc.get("notes"), dict) else {}
    undefined = sorted(used - set(notes))
    if undefined:
        problems.append(f"{name}: flags used but not defined in notes: {undefined}")
    unused = sorted(set(notes) - used)
    if unused:
        problems.append(f"{name}: notes define flags no test uses: {unused}")
    return problems


def lint_csv(text: str) -> list:
    from ..reference import prng

    lines = text.splitlines()
    if not lines or lines[0] != "seed,stream,index,value":
        return ["prng_streams.csv: first line must be 'seed,stream,index,value'"]
    problems = []
    for n, line in enumerate(lines[1:], 2):
        if not _CSV_ROW.match(line):
            problems.append(f"prng_streams.csv: line {n} malformed: {line[:60]!r}")
            break
        seed, stream, idx, value = line.split(",")
        key = prng.stream_key(int(seed, 16), int(stream))
        with np.errstate(over="ignore"):
            raw = prng._mix64(np.array([key + prng.GOLDEN * (np.uint64(int(idx, 16)) + np.uint64(1))], np.uint64))
        if int(raw[0]) != int(value, 16):
            problems.append(f"prng_streams.csv: line {n}: value disagrees with the generator definition")
            break
    return problems


def lint_dir(root) -> tuple:
    """(problems, number of files checked, number of tests) for a conformance directory."""
    root = pathlib.Path(root)
    problems = []
    documents = {}
    schema_dir = root / "schemas"
    if not schema_dir.is_dir():
        return [f"{root}: no schemas/ directory"], 0, 0
    for path in sorted(schema_dir.glob("*.json")):
        try:
            documents[path.name] = load_json(path)
        except FormatError as exc:
            problems.append(f"schemas/{exc}")
    try:
        idx = load_json(root / "index.json")
    except FormatError as exc:
        return problems + [str(exc)], 0, 0
    listed = {entry.get("file") for entry in idx.get("files", [])}
    on_disk = {p.name for p in root.glob("*.json")} - {"index.json"}
    for name in sorted(on_disk - listed):
        problems.append(f"{name}: not listed in index.json")
    files = tests = 0
    for entry in idx.get("files", []):
        name = entry.get("file")
        path = root / str(name)
        if not path.is_file():
            problems.append(f"{name}: listed in index.json but missing")
            continue
        text = path.read_text(encoding="utf-8")
        if hashlib.sha256(text.encode()).hexdigest() != entry.get("sha256"):
            problems.append(f"{name}: SHA-256 differs from index.json")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"{name}: not valid JSON: {exc.msg} at line {exc.lineno}")
            continue
        files += 1
        tests += doc.get("numberOfTests", 0) if isinstance(doc.get("numberOfTests"), int) else 0
        if doc.get("numberOfTests") != entry.get("numberOfTests"):
            problems.append(f"{name}: index.json says {entry.get('numberOfTests')} tests, file says "
                            f"{doc.get('numberOfTests')}")
        problems += lint_document(name, doc, documents, text)
    # v1 ships the raw PRNG streams; a family added beside it (real-v1, real_data.py) has its own
    # generator and no stream file
    added_family = "rawStreams" not in idx and idx.get("generator", {}).get("name") != spec.GENERATOR["name"]
    csv = idx.get("rawStreams", {})
    csv_path = root / str(csv.get("file", "prng_streams.csv"))
    if added_family:
        pass
    elif csv_path.is_file():
        text = csv_path.read_text(encoding="utf-8")
        if hashlib.sha256(text.encode()).hexdigest() != csv.get("sha256"):
            problems.append(f"{csv_path.name}: SHA-256 differs from index.json")
        problems += lint_csv(text)
    else:
        problems.append(f"{csv_path.name}: missing")
    return problems, files, tests


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tqref.conformance.lint", description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", help="conformance directory (default: found like `verify`)")
    args = parser.parse_args(argv)
    from .loader import find_dir

    try:
        root = find_dir(args.dir)
    except FileNotFoundError as exc:
        print(f"lint: {exc}", file=sys.stderr)
        return 2
    problems, files, tests = lint_dir(root)
    for p in problems:
        print(p)
    print(f"lint: {files} files, {tests} tests, {len(problems)} problem(s) in {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
