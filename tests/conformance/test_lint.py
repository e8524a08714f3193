"""The linter accepts the shipped vectors and names each kind of corruption."""

import hashlib
import json

import pytest

from tqref.conformance import encoding, lint


def test_shipped_vectors_lint_clean(vectors):
    problems, files, tests = lint.lint_dir(vectors)
    assert problems == []
    assert files >= 20 and tests >= 400


def _rewrite(root, name, mutate, *, canonical=True, fix_index=True):
    path = root / name
    doc = json.loads(path.read_text())
    mutate(doc)
    text = encoding.canonical_text(doc) if canonical else json.dumps(doc)
    path.write_text(text)
    if fix_index:  # keep index.json consistent so that only the intended problem shows
        idx = json.loads((root / "index.json").read_text())
        for entry in idx["files"]:
            if entry["file"] == name:
                entry["sha256"] = hashlib.sha256(text.encode()).hexdigest()
                entry["numberOfTests"] = doc.get("numberOfTests")
        (root / "index.json").write_text(encoding.canonical_text(idx))


def _first_test(doc):
    return doc["testGroups"][0]["tests"][0]


CORRUPTIONS = {
    "duplicate tcIds": lambda d: _first_test(d).update(tcId=d["testGroups"][0]["tests"][1]["tcId"]),
    "numberOfTests is": lambda d: d.update(numberOfTests=d["numberOfTests"] + 1),
    "not defined in notes": lambda d: _first_test(d)["flags"].append("MadeUpFlag"),
    "no test uses": lambda d: d["notes"].update(Unused={"bugType": "BASIC", "description": "x"}),
    "unexpected member 'surprise'": lambda d: _first_test(d).update(surprise=1),
    "hex holds": lambda d: _first_test(d)["indices"].update(hex=_first_test(d)["indices"]["hex"] + "00"),
    "dec does not match hex": lambda d: _first_test(d)["indices"]["dec"].__setitem__(0, 99),
    "missing outputs": lambda d: _first_test(d).pop("packed"),
    "several test types": lambda d: d["testGroups"].append(dict(d["testGroups"][0], type="UnpackTest")),
}


@pytest.mark.parametrize("expected", sorted(CORRUPTIONS))
def test_each_corruption_is_reported(vectors_copy, expected):
    _rewrite(vectors_copy, "pack_test.json", CORRUPTIONS[expected])
    problems, _, _ = lint.lint_dir(vectors_copy)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("value", [0.0, -1e-3])
def test_a_zero_or_negative_tolerance_is_reported(vectors_copy, value):
    _rewrite(vectors_copy, "mse_hadamard_test.json", lambda d: _first_test(d)["tolerance"].update(estimates=value))
    problems, _, _ = lint.lint_dir(vectors_copy)
    assert any("tolerance 'estimates' is" in p and "tqref.tolerance.FLOOR" in p for p in problems), problems


def test_hand_edit_breaks_canonical_form_and_checksum(vectors_copy):
    _rewrite(vectors_copy, "fwht_test.json", lambda d: None, canonical=False, fix_index=False)
    problems, _, _ = lint.lint_dir(vectors_copy)
    assert any("canonical format" in p for p in problems)
    assert any("SHA-256 differs" in p for p in problems)


def test_unlisted_and_missing_files(vectors_copy):
    (vectors_copy / "stray_test.json").write_text("{}\n")
    (vectors_copy / "fwht_test.json").unlink()
    problems, _, _ = lint.lint_dir(vectors_copy)
    assert any("stray_test.json: not listed" in p for p in problems)
    assert any("fwht_test.json: listed in index.json but missing" in p for p in problems)


def test_csv_value_error_is_reported(vectors_copy):
    path = vectors_copy / "prng_streams.csv"
    lines = path.read_text().splitlines()
    lines[5] = lines[5][:-1] + ("0" if lines[5][-1] != "0" else "1")
    path.write_text("\n".join(lines) + "\n")
    problems = lint.lint_csv(path.read_text())
    assert any("line 6" in p for p in problems)


def test_lint_cli_exit_codes(vectors, vectors_copy, capsys):
    assert lint.main([str(vectors)]) == 0
    _rewrite(vectors_copy, "pack_test.json", CORRUPTIONS["duplicate tcIds"])
    assert lint.main([str(vectors_copy)]) == 1
    assert "duplicate tcIds" in capsys.readouterr().out
