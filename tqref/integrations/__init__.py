"""Integrations of tqref with other libraries, each an optional extra.

* ``tqref.integrations.transformers`` — a TurboQuant key/value cache for Hugging Face
  transformers 5.x (``generate(cache=...)`` and plain forward calls); needs the ``hf`` extra
  (``pip install "tqref[hf]"``). docs/huggingface.md.

Nothing here is imported by ``import tqref``: each module imports its library itself and
raises an ImportError naming the extra when it is missing.
"""
