"""Fixtures for the runtime-profile tests and the conformance summary line.

The session summary prints one line per runtime and one per golden file, e.g.
``turboquant-rs conformance: 9000 checks, 0 mismatches`` (see golden_data.py for what a
check is).
"""

from __future__ import annotations

import pytest
from golden_data import AGREEMENT, TALLY, Tally, rs_inputs


@pytest.fixture(scope="session")
def tally() -> Tally:
    return TALLY


@pytest.fixture(scope="session")
def inputs() -> dict:
    return rs_inputs()


def pytest_terminal_summary(terminalreporter):
    runtimes = sorted({r for r, _ in TALLY.checks})
    for runtime in runtimes:
        n, m = TALLY.totals(runtime)
        terminalreporter.write_line(f"{runtime} conformance: {n} checks, {m} mismatches")
        for (r, source), count in sorted(TALLY.checks.items()):
            if r == runtime:
                bad = len(TALLY.mismatches.get((r, source), []))
                terminalreporter.write_line(f"    {source}: {count} checks, {bad} mismatches")
    for name, results in sorted(AGREEMENT.items()):
        idx = sum(r["indices"][0] for r in results), sum(r["indices"][1] for r in results)
        sc = sum(r["scales"][0] for r in results), sum(r["scales"][1] for r in results)
        ulps = max(r["max_scale_ulps"] for r in results)
        terminalreporter.write_line(
            f"turboquant-rs candle cache, default order vs {name}: {idx[0]}/{idx[1]} indices and "
            f"{sc[0]}/{sc[1]} f16 scales differ (max {ulps} ulp)"
        )
