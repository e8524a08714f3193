"""Outcomes of conformance checks and the per-file table (shared by verify and run)."""

from __future__ import annotations

import dataclasses
import json

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


@dataclasses.dataclass
class Outcome:
    """One (test id, operation) check."""

    id: str  # "<file stem>#<tcId>", or "<file stem>#group<k>" for group-level checks
    op: str
    status: str  # pass | fail | skip | error
    message: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class FileReport:
    file: str
    impl: str = ""
    outcomes: list = dataclasses.field(default_factory=list)
    problem: str = ""  # a file-level problem (unreadable file, ...)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def tests(self) -> int:
        return len({o.id for o in self.outcomes})

    @property
    def ok(self) -> bool:
        return not self.problem and self.count(FAIL) == 0 and self.count(ERROR) == 0

    @property
    def status(self) -> str:
        if self.problem or self.count(ERROR):
            return "ERROR"
        if self.count(FAIL):
            return "FAIL"
        if self.count(PASS) == 0:
            return "SKIP"
        return "PASS"


def table(reports: list, *, impl_header: str = "implementation") -> str:
    """A fixed-width pass/fail table, one row per file, plus a total row."""
    rows = [("file", "tests", "checks", "pass", "fail", "skip", "error", impl_header, "status")]
    for r in reports:
        rows.append((r.file, str(r.tests), str(len(r.outcomes)), str(r.count(PASS)), str(r.count(FAIL)),
                     str(r.count(SKIP)), str(r.count(ERROR) + (1 if r.problem else 0)), r.impl, r.status))
    tot = [sum(int(row[i]) for row in rows[1:]) for i in range(1, 7)]
    overall = "PASS" if all(r.ok for r in reports) and any(r.count(PASS) for r in reports) else (
        "FAIL" if reports else "NONE")
    rows.append(("total", *map(str, tot), "", overall))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i in (0, 7, 8) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0 or k == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def failures(reports: list, limit: int = 50) -> str:
    """One line per failing or erroring check (at most ``limit``) and per file problem."""
    lines = []
    for r in reports:
        if r.problem:
            lines.append(f"{r.file}: {r.problem}")
        for o in r.outcomes:
            if o.status in (FAIL, ERROR):
                lines.append(f"{o.status.upper()} {o.id} {o.op}: {o.message}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more (see --report)"]
    return "\n".join(lines)


def write_json(path, reports: list, meta: dict) -> None:
    doc = {**meta, "files": [{"file": r.file, "implementation": r.impl, "status": r.status, "problem": r.problem,
                             "outcomes": [o.to_dict() for o in r.outcomes]} for r in reports]}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
