"""Read conformance files: locate the vector directory, iterate file -> group -> test.

>>> from tqref.conformance import loader
>>> root = loader.find_dir()                                        # doctest: +SKIP
>>> for case in loader.iter_cases(root / "pack_test.json"):        # doctest: +SKIP
...     case.id, case.result, case.fields()["bits"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from . import VERSION_DIR, encoding, spec

ENV_DIR = "TQREF_CONFORMANCE_DIR"


class FormatError(ValueError):
    """A conformance file that cannot be read (message names the file and the problem)."""


def find_dir(explicit=None) -> pathlib.Path:
    """The vector directory: ``explicit``, else $TQREF_CONFORMANCE_DIR, else ``conformance/v1``
    in the current directory or one of its parents, else next to the tqref package (a
    repository checkout). Raises FileNotFoundError naming the places searched."""
    tried = []
    candidates = []
    if explicit:
        candidates.append(pathlib.Path(explicit))
    elif os.environ.get(ENV_DIR):
        candidates.append(pathlib.Path(os.environ[ENV_DIR]))
    else:
        here = pathlib.Path.cwd().resolve()
        candidates += [p / "conformance" / VERSION_DIR for p in (here, *here.parents)]
        candidates.append(pathlib.Path(__file__).resolve().parents[2] / "conformance" / VERSION_DIR)
    for path in candidates:
        tried.append(str(path))
        if (path / "index.json").is_file():
            return path
    raise FileNotFoundError(
        "conformance vectors not found (looked for index.json in: " + ", ".join(tried[:4])
        + (", …" if len(tried) > 4 else "") + "); pass --dir or set " + ENV_DIR)


#: vector families added beside v1 in their own directories (same spec version and schemas; v1 stays frozen)
ADDED_DIRS = ("real-v1", "norm16-v1")


def added_dirs(root) -> list:
    """The added families' directories next to the v1 directory ``root`` that hold an index.json."""
    root = pathlib.Path(root)
    return [root.parent / name for name in ADDED_DIRS if (root.parent / name / "index.json").is_file()]


def load_json(path) -> dict:
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path.name}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path.name}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


def decode_value(field: spec.Field, value):
    """A file value of ``field`` as Python / numpy (u64 -> int, tensor -> array)."""
    if field.kind == "u64":
        return encoding.parse_u64(value)
    if field.kind == "tensor":
        return encoding.decode(value)
    return value


@dataclasses.dataclass
class Case:
    """One test with its file and group."""

    file: str  # file name, e.g. "pack_test.json"
    doc: dict
    group: dict
    test: dict

    @property
    def type(self) -> spec.TestType:
        return spec.TEST_TYPES[self.group["type"]]

    @property
    def id(self) -> str:
        return f"{self.file.removesuffix('.json')}#{self.test['tcId']}"

    @property
    def result(self) -> str:
        return self.test["result"]

    def has_flag(self, flag: str) -> bool:
        return flag in self.test["flags"]

    def fields(self, *, outputs: bool = True) -> dict:
        """Group parameters, inputs (and expected outputs) decoded, by field name."""
        t = self.type
        out = {}
        for name, field in t.group.items():
            if name in self.group:
                out[name] = decode_value(field, self.group[name])
        for name, field in t.inputs.items():
            if name in self.test:
                out[name] = decode_value(field, self.test[name])
        if outputs:
            for name, field in t.outputs.items():
                if name in self.test:
                    out[name] = decode_value(field, self.test[name])
        return out

    def expected(self) -> dict:
        t = self.type
        return {name: encoding.decode(self.test[name]) for name in t.outputs if name in self.test}

    def tolerance(self, name: str) -> float | None:
        return self.test.get("tolerance", {}).get(name)


def iter_cases(path):
    """Yield every :class:`Case` of the file at ``path``."""
    path = pathlib.Path(path)
    doc = load_json(path)
    groups = doc.get("testGroups")
    if not isinstance(groups, list):
        raise FormatError(f"{path.name}: no testGroups list")
    for group in groups:
        if group.get("type") not in spec.TEST_TYPES:
            raise FormatError(f"{path.name}: unknown test type {group.get('type')!r}")
        for test in group.get("tests", []):
            yield Case(path.name, doc, group, test)


def index(root) -> dict:
    return load_json(pathlib.Path(root) / "index.json")


def vector_files(root) -> list:
    """The vector files listed in index.json, in ladder order (paths)."""
    root = pathlib.Path(root)
    return [root / entry["file"] for entry in index(root)["files"]]

