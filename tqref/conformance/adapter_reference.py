"""The reference adapter: tqref itself behind the conformance protocol.

    tqref conformance run --cmd "python -m tqref.conformance.adapter_reference"
    tqref conformance run --cmd "python -m tqref.conformance.adapter_reference --backend numba"

It reads one JSON request per line from stdin and writes one answer per line to stdout
(docs/conformance-protocol.md). Every operation of tqref.conformance.operations is offered.
It is also the template for a Python adapter around another library: replace
``operations.run`` with calls into that library.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import operations
from .runner import PROTOCOL, decode_request, np_outputs_to_answer


def answer(request: dict, backend: str) -> dict:
    """The answer object for one request (never raises)."""
    rid = request.get("id")
    op = request.get("op")
    if op == "hello":
        from .. import __version__

        return {"protocol": PROTOCOL, "implementation": f"tqref {__version__} ({backend})",
                "ops": sorted(operations.OPERATIONS)}
    try:
        fields = decode_request(request)
        outputs = operations.run(str(op), fields, backend)
    except operations.Unsupported as exc:
        return {"id": rid, "unsupported": str(exc)}
    except operations.Refused as exc:
        return {"id": rid, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the protocol reports every failure as an answer
        return {"id": rid, "error": f"internal error: {type(exc).__name__}: {exc}"}
    return np_outputs_to_answer(str(op), outputs, request)


def serve(stdin, stdout, backend: str = "reference") -> int:
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            stdout.write(json.dumps({"id": None, "error": f"unreadable request: {exc}"}) + "\n")
            stdout.flush()
            continue
        stdout.write(json.dumps(answer(request, backend)) + "\n")
        stdout.flush()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tqref.conformance.adapter_reference",
                                     description="tqref behind the conformance JSON-lines protocol")
    parser.add_argument("--backend", default="reference", help="tqref backend for the quantizer operations")
    args = parser.parse_args(argv)
    return serve(sys.stdin, sys.stdout, args.backend)


if __name__ == "__main__":
    sys.exit(main())
