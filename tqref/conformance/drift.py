"""Has the generator drifted from the shipped vectors? Exact tier bit for bit, the rest within
its stated tolerance (docs/compatibility.md "Tiers"), so the answer is the same on every CPU.

Regenerating the vectors on another machine (or after a change to a derivation tool, such as
the Lloyd–Max solver) must reproduce

* every exact-tier value bit for bit: codes, packed bytes, sign bits, norms, exact floats,
  integers, strings, the raw PRNG stream file and the schemas;
* every output a test lists in its ``tolerance`` map within that tolerance;
* every codebook-derived input of a group (boundaries, centroids, shrinkage α — statistical
  tier for dimensions outside the frozen table) within ``codebook_tables.SOLVER_RTOL`` of its
  largest magnitude;
* every stated tolerance within a factor ``BOUND_FACTOR`` of the shipped one: a tolerance is
  derived from the reference's own float error (``tqref.tolerance``: an analytic bound, or the
  measured float32 − float64 difference), which moves with the float32 evaluation order; only a
  bound that changed scale is drift.

``index.json`` records each file's sha256, which changes with any tolerance-tier bit; those
hashes are checked against the shipped files by the linter, not against the regeneration.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from ..reference.codebook_tables import SOLVER_RTOL
from .. import tolerance
from . import encoding

#: group inputs produced by the Lloyd–Max solver (codebook.solve / codebook.shrinkage)
CODEBOOK_FIELDS = frozenset({
    "boundaries", "centroids", "shrinkage",
    "keyBoundaries", "keyCentroids", "keyShrinkage",
    "valueBoundaries", "valueCentroids", "valueShrinkage",
})
#: a regenerated tolerance must lie within [shipped / BOUND_FACTOR, shipped · BOUND_FACTOR]
BOUND_FACTOR = 2.0


def _is_tensor(obj) -> bool:
    return isinstance(obj, dict) and "dtype" in obj and "hex" in obj


def _tensor_drift(path: str, shipped: dict, fresh: dict, tol: float | None) -> str | None:
    if shipped["hex"] == fresh["hex"] and shipped.get("shape") == fresh.get("shape"):
        return None
    if tol is None:
        return f"{path}: exact-tier value changed"
    a, b = encoding.decode(shipped).astype(np.float64), encoding.decode(fresh).astype(np.float64)
    if a.shape != b.shape:
        return f"{path}: shape {list(a.shape)} became {list(b.shape)}"
    if not np.all(tolerance.within(b, a, tol)):
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - b)
        return f"{path}: differs by {float(np.nanmax(diff)):.3e}, more than its tolerance {tol:.3e}"
    return None


def _walk(path: str, shipped, fresh, tolerances: dict, out: list) -> None:
    if _is_tensor(shipped) and _is_tensor(fresh):
        name = path.rsplit("/", 1)[-1]
        tol = tolerances.get(name)
        if tol is None and name in CODEBOOK_FIELDS:
            tol = SOLVER_RTOL * float(np.max(np.abs(encoding.decode(shipped).astype(np.float64)), initial=0.0))
        problem = _tensor_drift(path, shipped, fresh, tol)
        if problem:
            out.append(problem)
        # "dec" is the decimal rendering of "hex"; the linter checks that they agree
        rest = [k for k in set(shipped) | set(fresh) if k not in ("hex", "dec")]
        for key in rest:
            if shipped.get(key) != fresh.get(key):
                out.append(f"{path}/{key}: {shipped.get(key)!r} became {fresh.get(key)!r}")
        return
    if isinstance(shipped, dict) and isinstance(fresh, dict):
        if set(shipped) != set(fresh):
            out.append(f"{path}: keys {sorted(set(shipped) ^ set(fresh))} added or removed")
            return
        if "tolerance" in shipped and isinstance(shipped["tolerance"], dict):
            tolerances = {**tolerances, **shipped["tolerance"]}
            for key, bound in shipped["tolerance"].items():
                new = fresh["tolerance"].get(key)
                if new is None or not bound / BOUND_FACTOR <= new <= bound * BOUND_FACTOR:
                    out.append(f"{path}/tolerance/{key}: bound {bound!r} became {new!r}")
        for key in shipped:
            if key != "tolerance":
                _walk(f"{path}/{key}", shipped[key], fresh[key], tolerances, out)
        return
    if isinstance(shipped, list) and isinstance(fresh, list):
        if len(shipped) != len(fresh):
            out.append(f"{path}: {len(shipped)} items became {len(fresh)}")
            return
        for i, (a, b) in enumerate(zip(shipped, fresh)):
            label = f"tcId {a['tcId']}" if isinstance(a, dict) and "tcId" in a else str(i)
            _walk(f"{path}[{label}]", a, b, tolerances, out)
        return
    if shipped != fresh:
        out.append(f"{path}: {shipped!r} became {fresh!r}")


def _without_hashes(index: dict) -> dict:
    files = [{k: v for k, v in entry.items() if k != "sha256"} for entry in index.get("files", [])]
    return {**index, "files": files}


def differences(shipped_dir, regenerated: dict) -> list:
    """Drift of ``regenerated`` ({relative path: text}) from the files under ``shipped_dir``:
    one line per value outside its tier's rule; [] when the vectors are reproduced."""
    root = pathlib.Path(shipped_dir)
    shipped_files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    out = []
    if shipped_files != set(regenerated):
        out.append(f"file sets differ: only shipped {sorted(shipped_files - set(regenerated))}, "
                   f"only generated {sorted(set(regenerated) - shipped_files)}")
    for rel in sorted(shipped_files & set(regenerated)):
        old, new = (root / rel).read_text(encoding="utf-8"), regenerated[rel]
        if old == new:
            continue
        if not rel.endswith(".json") or rel.startswith("schemas"):
            out.append(f"{rel}: changed (exact tier: every byte)")
            continue
        a, b = json.loads(old), json.loads(new)
        if rel == "index.json":
            a, b = _without_hashes(a), _without_hashes(b)
        found = []
        _walk(rel, a, b, {}, found)
        out.extend(found)
    return out
