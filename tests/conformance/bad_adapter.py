"""Adapters that misbehave, for tests/conformance/test_run.py: python bad_adapter.py MODE.

Modes (each answers the handshake correctly unless said otherwise):
  crash       exits with code 3 (and a message on stderr) on the first request
  hang        never answers the first request
  garbage     answers a line that is not JSON
  wrongid     answers with another id
  badshape    answers {"id": ..., "outputs": [1, 2]} (valid JSON, wrong structure)
  wrong       the reference adapter, but flips the low bit of byte 0 of every 'packed' output
  nohello     exits at once without a handshake
  accepts     the reference adapter, but answers invalid requests with zeros instead of refusing
"""

import json
import sys
import time

from tqref.conformance import adapter_reference

MODE = sys.argv[1]


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if MODE == "nohello":
    sys.exit(4)
for line in sys.stdin:
    request = json.loads(line)
    if request.get("op") == "hello":
        say(adapter_reference.answer(request, "reference"))
        continue
    rid = request.get("id")
    if MODE == "crash":
        sys.stderr.write("fatal: simulated crash in the adapter\n")
        sys.stderr.flush()
        sys.exit(3)
    if MODE == "hang":
        time.sleep(3600)
    if MODE == "garbage":
        sys.stdout.write("this is not json {\n")
        sys.stdout.flush()
        continue
    if MODE == "wrongid":
        say({"id": "something-else", "outputs": {}})
        continue
    if MODE == "badshape":
        say({"id": rid, "outputs": [1, 2]})
        continue
    answer = adapter_reference.answer(request, "reference")
    if MODE == "wrong" and "packed" in answer.get("outputs", {}):
        hexs = answer["outputs"]["packed"]
        answer["outputs"]["packed"] = f"{int(hexs[:2], 16) ^ 1:02x}" + hexs[2:]
    if MODE == "accepts" and "error" in answer:
        answer = {"id": rid, "outputs": {"indices": "00", "norm": "00000000", "packed": "00"}}
    say(answer)
