"""Drive an external implementation over the JSON-lines protocol (``tqref conformance run``).

The protocol is specified in docs/conformance-protocol.md; in short: tqref starts the
adapter command, writes one JSON object per line to its stdin, and reads one JSON object
per line from its stdout.

    -> {"op": "hello", "protocol": "tqref-conformance/1"}
    <- {"protocol": "tqref-conformance/1", "implementation": "mylib 1.2", "ops": ["pack", ...]}
    -> {"id": "pack_test#1", "op": "pack", "bits": 3, "count": 3, "indices": "050207"}
    <- {"id": "pack_test#1", "outputs": {"packed": "d501"}}
       (or {"id": ..., "error": "why it refused"}, or {"id": ..., "unsupported": "why"})

Robustness: every read has a timeout; an adapter that exits, hangs, writes a line that is
not JSON, or answers another id is stopped (its process group is killed) and restarted for
the remaining checks, at most ``max_restarts`` times; each such event is an "error" outcome
with the reason and the tail of the adapter's stderr. No adapter behaviour makes the runner
hang or raise.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shlex
import signal
import subprocess
import threading
import time

from . import compare, encoding, spec
from .loader import Case, FormatError, iter_cases, vector_files
from .report import ERROR, FAIL, PASS, SKIP, FileReport, Outcome

PROTOCOL = "tqref-conformance/1"
STDERR_TAIL = 2000
MAX_LINE = 64 * 1024 * 1024


class AdapterError(Exception):
    """The adapter crashed, hung, or broke the framing (kind: spawn, crash, timeout, garbage)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- field typing


def op_fields(op_name: str) -> dict:
    """name -> spec.Field for every input and output of ``op_name`` (from the test types using it)."""
    out = {}
    for t in spec.TEST_TYPES.values():
        if op_name in t.ops:
            for table in (t.group, t.inputs, t.outputs):
                for name, field in table.items():
                    out.setdefault(name, field)
    return out


def field_dtype(field: spec.Field, fields: dict) -> str:
    """Tensor dtype of a field in a request/answer (norms and γ follow ``normDtype``)."""
    if len(field.dtypes) > 1:
        return fields.get("normDtype", field.dtypes[0])
    return field.dtypes[0]


def encode_request(case: Case, op: spec.Op) -> dict:
    """The protocol request of one (test, operation): flat JSON, tensors as hex."""
    request = {"id": case.id, "op": op.name}
    for name in op.inputs + op.optional_inputs:
        for source in (case.group, case.test):
            if name in source:
                value = source[name]
                request[name] = value["hex"] if isinstance(value, dict) else value
                break
    return request


def decode_request(request: dict) -> dict:
    """Protocol request -> fields for :func:`tqref.conformance.operations.run` (adapter side)."""
    kinds = op_fields(request.get("op", ""))
    fields = {}
    for name, value in request.items():
        if name in ("id", "op"):
            continue
        field = kinds.get(name)
        if field is None:
            fields[name] = value
        elif field.kind == "u64":
            fields[name] = encoding.parse_u64(value)
        elif field.kind == "tensor":
            fields[name] = encoding.from_hex(value, field_dtype(field, request))
        else:
            fields[name] = value
    return fields


def encode_outputs(op_name: str, outputs: dict, request: dict) -> dict:
    """Adapter side: output arrays -> hex strings in each field's dtype."""
    kinds = op_fields(op_name)
    out = {}
    for name, value in outputs.items():
        field = kinds.get(name)
        if field is None or field.kind != "tensor":
            continue
        out[name] = encoding.hex_of(value, field_dtype(field, request))
    return out


# --------------------------------------------------------------------------- the process


class Adapter:
    """One running adapter process with line-based, time-limited request/response."""

    def __init__(self, argv: list, timeout: float, cwd=None):
        self.argv, self.timeout, self.cwd = argv, timeout, cwd
        self.proc = None
        self.lines: queue.Queue = queue.Queue()
        self.stderr = collections.deque(maxlen=STDERR_TAIL)
        self.info: dict = {}

    def start(self) -> dict:
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.cwd, start_new_session=True)
        except OSError as exc:
            raise AdapterError("spawn", f"cannot start {shlex.join(self.argv)}: {exc}") from exc
        self.lines = queue.Queue()
        self.stderr = collections.deque(maxlen=STDERR_TAIL)
        threading.Thread(target=self._read_stdout, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc.stderr, self.stderr), daemon=True).start()
        hello = self.exchange({"op": "hello", "protocol": PROTOCOL}, expect_id=None)
        if hello.get("protocol") != PROTOCOL or not isinstance(hello.get("ops"), list):
            raise AdapterError("garbage", f"handshake: expected {{\"protocol\": \"{PROTOCOL}\", \"ops\": [...]}}, "
                                          f"got {_short(json.dumps(hello))}")
        self.info = hello
        return hello

    @staticmethod
    def _read_stdout(stream, lines):
        try:
            while True:
                line = stream.readline(MAX_LINE)
                if not line:
                    break
                lines.put(line)
        except (OSError, ValueError):
            pass
        lines.put(None)

    @staticmethod
    def _read_stderr(stream, tail):
        try:
            while True:
                chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
                if not chunk:
                    break
                tail.extend(chunk.decode("utf-8", "replace"))
        except (OSError, ValueError):
            pass

    def stderr_tail(self) -> str:
        text = "".join(self.stderr).strip()
        return ("; stderr: " + _short(text.replace("\n", " | "), 400)) if text else ""

    def exchange(self, message: dict, expect_id) -> dict:
        """Send one request and return the answer object (AdapterError on any framing failure)."""
        if self.proc is None or self.proc.poll() is not None:
            raise AdapterError("crash", self._exit_text())
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise AdapterError("crash", self._exit_text()) from None
        deadline = time.monotonic() + self.timeout
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AdapterError("timeout", f"no answer within {self.timeout:g} s" + self.stderr_tail()) from None
        if line is None:
            raise AdapterError("crash", self._exit_text())
        try:
            answer = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise AdapterError("garbage", f"answer is not a JSON object: {_short(line.decode('utf-8', 'replace'))}"
                               + self.stderr_tail()) from None
        if not isinstance(answer, dict):
            raise AdapterError("garbage", f"answer is not a JSON object: {_short(line.decode('utf-8', 'replace'))}")
        if expect_id is not None and answer.get("id") != expect_id:
            raise AdapterError("garbage", f"answer has id {answer.get('id')!r}, expected {expect_id!r}")
        return answer

    def _exit_text(self) -> str:
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
        time.sleep(0.05)  # let the stderr reader catch up
        if code is None:
            return "adapter closed its output" + self.stderr_tail()
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"adapter {how}" + self.stderr_tail()

    def stop(self, grace: float = 2.0) -> None:
        """Close stdin, wait ``grace`` seconds, then kill the process group."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- checking answers


def check_answer(case: Case, op: spec.Op, answer: dict) -> Outcome:
    if "unsupported" in answer:
        return Outcome(case.id, op.name, SKIP, f"adapter: unsupported: {_short(str(answer['unsupported']))}")
    if "error" in answer:
        if case.result in ("invalid", "acceptable"):
            return Outcome(case.id, op.name, PASS, "refused as expected")
        return Outcome(case.id, op.name, FAIL, f"refused a valid input: {_short(str(answer['error']))}")
    outputs = answer.get("outputs")
    if not isinstance(outputs, dict):
        return Outcome(case.id, op.name, FAIL, "answer has neither 'outputs' (an object), 'error' nor 'unsupported'")
    if case.result == "invalid":
        return Outcome(case.id, op.name, FAIL, "accepted an invalid input (expected an error answer)")
    expected = case.expected()
    for name in op.outputs + op.optional_outputs:
        if name not in expected:
            continue
        if name not in outputs:
            if name in op.outputs:
                return Outcome(case.id, op.name, FAIL, f"{name}: missing from the answer")
            continue
        value = outputs[name]
        dtype = case.test[name]["dtype"]
        try:
            actual = encoding.from_hex(value, dtype) if isinstance(value, str) else None
        except ValueError as exc:
            return Outcome(case.id, op.name, FAIL, f"{name}: not valid {dtype} hex: {exc}")
        if actual is None:
            return Outcome(case.id, op.name, FAIL, f"{name}: expected a hex string, got {type(value).__name__}")
        field = case.type.outputs[name]
        msg = compare.first_mismatch(name, expected[name], actual, field.compare, case.tolerance(name))
        if msg:
            return Outcome(case.id, op.name, FAIL, msg)
    return Outcome(case.id, op.name, PASS)


def run(root, command: str, *, timeout: float = 10.0, max_restarts: int = 3, only=None, cwd=None,
        progress=None, log=None) -> tuple:
    """Run every supported check of the vectors in ``root`` through the adapter ``command``.

    Returns (reports, info): FileReports, and a dict with the handshake answer and the number
    of restarts. Raises AdapterError only when the adapter cannot be started or fails its
    very first handshake (nothing could be checked).
    """
    argv = shlex.split(command)
    if not argv:
        raise AdapterError("spawn", "empty adapter command")
    adapter = Adapter(argv, timeout, cwd)
    hello = adapter.start()
    supported = {str(op) for op in hello["ops"]}
    restarts = 0
    stopped = ""
    paths = vector_files(root)
    if only:
        paths = [p for p in paths if any(s in p.name for s in only)]
    reports = []
    iterator = progress(paths) if progress is not None else paths
    try:
        for path in iterator:
            report = FileReport(path.name, impl=str(hello.get("implementation", "adapter"))[:40])
            reports.append(report)
            try:
                cases = list(iter_cases(path))
            except FormatError as exc:
                report.problem = str(exc)
                continue
            for case in cases:
                for op_name in case.type.ops:
                    op = spec.OPS[op_name]
                    if case.result == "invalid" and not op.on_invalid:
                        continue
                    if op_name not in supported:
                        report.outcomes.append(Outcome(case.id, op_name, SKIP, "operation not offered by the adapter"))
                        continue
                    if stopped:
                        report.outcomes.append(Outcome(case.id, op_name, SKIP, f"not run: {stopped}"))
                        continue
                    request = encode_request(case, op)
                    try:
                        answer = adapter.exchange(request, expect_id=case.id)
                    except AdapterError as exc:
                        report.outcomes.append(Outcome(case.id, op_name, ERROR, f"{exc.kind}: {exc}"))
                        if log:
                            log(f"{case.id} {op_name}: {exc.kind}: {exc}")
                        adapter.stop(grace=0.2)
                        restarts += 1
                        if restarts > max_restarts:
                            stopped = f"the adapter failed {restarts} times; giving up"
                            continue
                        try:
                            adapter.start()
                        except AdapterError as exc2:
                            stopped = f"restart failed: {exc2}"
                        continue
                    report.outcomes.append(check_answer(case, op, answer))
    finally:
        adapter.stop()
    return reports, {"hello": hello, "restarts": restarts, "stopped": stopped}


def np_outputs_to_answer(op_name: str, outputs: dict, request: dict) -> dict:
    """Adapter helper: the answer object for computed outputs."""
    return {"id": request.get("id"), "outputs": encode_outputs(op_name, outputs, request)}


__all__ = ["Adapter", "AdapterError", "PROTOCOL", "run", "encode_request", "decode_request", "encode_outputs",
           "check_answer", "np_outputs_to_answer"]
