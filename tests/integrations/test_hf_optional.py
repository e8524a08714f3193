"""The hf extra stays optional: tqref never imports torch/transformers, and the integration says how to get them.

Runs without torch or transformers installed, in one fresh interpreter (importing tqref is
the slow part, so both checks share it).
"""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import tqref, tqref.integrations
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
sys.modules["transformers"] = None  # "import transformers" now raises ImportError, as if not installed
try:
    import tqref.integrations.transformers
except ImportError as e:
    print(e)
"""


def test_core_never_imports_the_hf_extra_and_the_integration_names_it():
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    loaded, message = res.stdout.strip().split("\n", 1)
    assert loaded == "[]"
    assert 'pip install "tqref[hf]"' in message
