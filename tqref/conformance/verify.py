"""Check the installed tqref against the conformance vectors (``tqref conformance verify``).

For each vector file and each test, every operation of the test type (spec.OPS) is run with
tqref — the quantizer operations on the chosen backend, the building blocks (PRNG,
rotations, codebooks, packing, QJL) with the reference, which is the only implementation of
those — and every output is compared (compare.py). Inputs of later operations come from the
file's expected outputs (dequantize reads the file's packed codes, not ours), so one wrong
step fails one check, not all that follow.

Extra checks with no protocol operation:

* HadamardRotationTest: the group's signs equal ``rotation.hadamard_signs``;
* statistical-tier groups (Haar Π, Gaussian or orthogonal S): the matrix tqref generates on
  this machine is within the stated tolerance of the shipped one. Outputs are then checked
  with the shipped matrix (operations.py "Given data").
"""

from __future__ import annotations

import numpy as np

from . import compare, operations, spec
from .loader import Case, FormatError, iter_cases, vector_files
from .report import ERROR, FAIL, PASS, SKIP, FileReport, Outcome

MATRIX_TOLERANCE = 1e-6  # generated vs shipped statistical-tier matrices (float32 entries)


def check_outputs(case: Case, op: spec.Op, outputs: dict, expected: dict) -> str | None:
    """First mismatch among the op's outputs (required ones must be present), else None."""
    for name in op.outputs + op.optional_outputs:
        if name not in expected:
            continue
        if name not in outputs:
            if name in op.outputs:
                return f"{name}: missing from the answer"
            continue
        field = case.type.outputs[name]
        msg = compare.first_mismatch(name, expected[name], outputs[name], field.compare, case.tolerance(name))
        if msg:
            return msg
    return None


def op_inputs(case: Case, op: spec.Op) -> dict:
    fields = case.fields()
    return {k: fields[k] for k in op.inputs + op.optional_inputs if k in fields}


def run_case(case: Case, backend: str) -> list:
    """Outcomes of every operation of one test."""
    outcomes = []
    expected = case.expected()
    for op_name in case.type.ops:
        op = spec.OPS[op_name]
        if case.result == "invalid" and not op.on_invalid:
            continue
        impl_backend = backend if op_name in operations.BACKEND_OPS else "reference"
        try:
            out = operations.run(op_name, op_inputs(case, op), impl_backend)
        except operations.Unsupported as exc:
            outcomes.append(Outcome(case.id, op_name, SKIP, str(exc)))
            continue
        except operations.Refused as exc:
            if case.result in ("invalid", "acceptable"):
                outcomes.append(Outcome(case.id, op_name, PASS, "refused as expected"))
            else:
                outcomes.append(Outcome(case.id, op_name, FAIL, f"refused a valid input: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - a crash in tqref is a reported error, not a traceback
            outcomes.append(Outcome(case.id, op_name, ERROR, f"{type(exc).__name__}: {exc}"))
            continue
        if case.result == "invalid":
            outcomes.append(Outcome(case.id, op_name, FAIL, "accepted an invalid input (expected a refusal)"))
            continue
        msg = check_outputs(case, op, out, expected)
        outcomes.append(Outcome(case.id, op_name, FAIL if msg else PASS, msg or ""))
    return outcomes


def _group_checks(case: Case, k: int) -> list:
    """Checks of the group's derived data (signs, statistical-tier matrices)."""
    from ..reference import qjl, rotation

    f = case.fields(outputs=False)
    gid = f"{case.file.removesuffix('.json')}#group{k}"
    out = []
    if case.type.name == "HadamardRotationTest":
        msg = compare.first_mismatch("signs", f["signs"], rotation.hadamard_signs(f["dim"], f["seed"]).astype(np.int8))
        out.append(Outcome(gid, "hadamard_signs", FAIL if msg else PASS, msg or ""))
    matrix = f.get("matrix")
    if matrix is not None:
        d, seed = f["dim"], f["seed"]
        if case.type.name in ("HaarRotationTest", "MseTest"):
            generated, what = rotation.haar_matrix(d, seed), "haar_matrix"
        else:
            generated, what = qjl.projection_matrix(f["projection"], d, seed), f"{f['projection']}_projection"
        tol = float(f["matrixTolerance"]) if "matrixTolerance" in f else MATRIX_TOLERANCE
        msg = compare.first_mismatch("matrix", matrix, generated, "tolerance", tol)
        if msg is None and generated.tobytes() != np.asarray(matrix, np.float32).tobytes():
            diff = float(np.max(np.abs(generated.astype(np.float64) - matrix)))
            out.append(Outcome(gid, what, PASS, f"within tolerance (max |difference| {diff:.3g}); outputs are "
                                                "checked with the shipped matrix"))
        else:
            out.append(Outcome(gid, what, FAIL if msg else PASS, msg or "bit-identical"))
    return out


def verify_file(path, backend: str = "reference") -> FileReport:
    report = FileReport(path.name)
    try:
        cases = list(iter_cases(path))
    except FormatError as exc:
        report.problem = str(exc)
        return report
    if cases and any(op in operations.BACKEND_OPS for op in cases[0].type.ops):
        report.impl = backend
    else:
        report.impl = "reference"
    seen_groups = {}
    for case in cases:
        key = id(case.group)
        if key not in seen_groups:
            seen_groups[key] = len(seen_groups)
            report.outcomes += _group_checks(case, seen_groups[key])
        try:
            report.outcomes += run_case(case, backend)
        except (KeyError, ValueError, TypeError) as exc:  # malformed test data
            report.outcomes.append(Outcome(case.id, "-", ERROR, f"malformed test: {type(exc).__name__}: {exc}"))
    return report


def verify(root, backend: str = "reference", *, only=None, progress=None) -> list:
    """FileReports for every file listed in ``root``/index.json (``only``: substrings to keep)."""
    paths = vector_files(root)
    if only:
        paths = [p for p in paths if any(s in p.name for s in only)]
    if progress is not None:
        paths = progress(paths)
    return [verify_file(p, backend) for p in paths]
