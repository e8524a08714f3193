"""`tqref conformance run`: the shipped adapters pass; misbehaving adapters give clear reports."""

import argparse
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from tqref.commands import conformance as cmd
from tqref.conformance import report, runner

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
PY = shlex.quote(sys.executable)
REFERENCE = f"{PY} -m tqref.conformance.adapter_reference"


def bad(mode: str) -> str:
    return f"{PY} {shlex.quote(str(HERE / 'bad_adapter.py'))} {mode}"


def _cli(*argv):
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    args = parser.parse_args(["conformance", *argv])
    return args.func(args)


def _statuses(reports):
    return {s: sum(r.count(s) for r in reports) for s in (report.PASS, report.FAIL, report.SKIP, report.ERROR)}


def test_reference_adapter_passes_everything(vectors):
    reports, info = runner.run(vectors, REFERENCE, timeout=30)
    counts = _statuses(reports)
    assert counts[report.FAIL] == counts[report.ERROR] == 0, report.failures(reports)
    assert counts[report.SKIP] == 0 and counts[report.PASS] >= 600
    assert info["restarts"] == 0


@pytest.fixture(scope="module")
def c_adapter(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        pytest.skip("no C compiler (cc) on this machine")
    exe = tmp_path_factory.mktemp("c") / "tq_adapter"
    src = REPO / "examples" / "adapters" / "c" / "tq_adapter.c"
    proc = subprocess.run([compiler, "-std=c99", "-O2", "-Wall", "-Wextra", "-ffp-contract=off", "-o", str(exe),
                           str(src), "-lm"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    return str(exe)


def test_c_adapter_passes_every_operation_it_offers(vectors, c_adapter):
    reports, info = runner.run(vectors, shlex.quote(c_adapter), timeout=30)
    counts = _statuses(reports)
    assert counts[report.FAIL] == counts[report.ERROR] == 0, report.failures(reports)
    assert counts[report.PASS] >= 600
    # it offers the portable ladder; codebooks are loaded, not solved; profiles and cache are not ported
    for r in reports:
        for o in r.outcomes:
            if o.status == report.SKIP:
                assert o.message == "operation not offered by the adapter" or r.file.startswith("codebook_"), o
    ladder = [r for r in reports if r.file.split("_")[0] in ("prng", "ordered", "split", "fwht", "rotation",
                                                             "nearest", "pack", "unpack", "mse", "qjl", "prod")]
    assert len(ladder) == 20 and all(r.status == "PASS" for r in ladder)


def test_cli_run_exit_code_zero_for_the_c_adapter(vectors, c_adapter, capsys):
    assert _cli("run", "--cmd", shlex.quote(c_adapter), "--dir", str(vectors), "--only", "mse_hadamard") == 0
    assert "tq_adapter.c" in capsys.readouterr().out


def test_wrong_adapter_reports_first_mismatch_per_test(vectors, capsys):
    code = _cli("run", "--cmd", bad("wrong"), "--dir", str(vectors), "--only", "pack_test")
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL pack_test#1 pack: packed[0]: expected 213 (0xd5), got 212 (0xd4)" in out


def test_adapter_accepting_invalid_input_fails(vectors):
    reports, _ = runner.run(vectors, bad("accepts"), only=["unpack_test"])
    fails = [o for r in reports for o in r.outcomes if o.status == report.FAIL]
    assert fails and all("accepted an invalid input" in o.message for o in fails)


@pytest.mark.parametrize("mode, kind, text", [
    ("crash", "crash", "exited with code 3; stderr: fatal: simulated crash"),
    ("garbage", "garbage", "not a JSON object: this is not json"),
    ("wrongid", "garbage", "answer has id 'something-else'"),
    ("hang", "timeout", "no answer within 1 s"),
])
def test_misbehaving_adapters_give_clear_errors_not_hangs(vectors, mode, kind, text):
    start = time.monotonic()
    reports, info = runner.run(vectors, bad(mode), timeout=1.0, max_restarts=1, only=["pack_test"])
    assert time.monotonic() - start < 30
    errors = [o for r in reports for o in r.outcomes if o.status == report.ERROR]
    assert len(errors) == 2  # the first failure, then one restart that fails again
    assert errors[0].message.startswith(f"{kind}: ") and text in errors[0].message, errors[0].message
    assert info["restarts"] == 2 and "giving up" in info["stopped"]
    rest = [o for r in reports for o in r.outcomes if o.status == report.SKIP]
    assert rest and all(o.message.startswith("not run: ") for o in rest)


def test_structurally_wrong_answers_fail_without_restarts(vectors):
    reports, info = runner.run(vectors, bad("badshape"), only=["pack_test"])
    fails = [o for r in reports for o in r.outcomes if o.status == report.FAIL]
    assert fails and "neither 'outputs'" in fails[0].message and info["restarts"] == 0


def test_cli_reports_unstartable_adapters(vectors, capsys, tmp_path):
    assert _cli("run", "--cmd", bad("nohello"), "--dir", str(vectors)) == 2
    assert "exited with code 4" in capsys.readouterr().err
    assert _cli("run", "--cmd", str(tmp_path / "does-not-exist"), "--dir", str(vectors)) == 2
    assert "cannot start" in capsys.readouterr().err


def test_cli_run_failure_exit_code_and_json_report(vectors, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = _cli("run", "--cmd", bad("crash"), "--dir", str(vectors), "--only", "fwht", "--timeout", "2",
                "--max-restarts", "0", "--report", str(out))
    assert code == 1
    assert "Traceback" not in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["files"][0]["status"] == "ERROR"
    assert doc["files"][0]["outcomes"][0]["message"].startswith("crash: adapter exited with code 3")


def test_reference_adapter_answers_malformed_requests(capsys):
    from tqref.conformance import adapter_reference

    answer = adapter_reference.answer({"id": "x", "op": "pack", "bits": 3, "count": 2, "indices": "zz"}, "reference")
    assert answer["id"] == "x" and "error" in answer
    assert "unsupported" in adapter_reference.answer({"id": "y", "op": "no_such_op"}, "reference")
