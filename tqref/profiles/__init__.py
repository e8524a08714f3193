"""Bit-exact profiles of other TurboQuant runtimes, built from :mod:`tqref.reference` parts.

* :mod:`tqref.profiles.turboquant_rs` — the turboquant-rs crate's core CPU path;
* :mod:`tqref.profiles.turboquant_rs_cache` — its candle KV-cache layer (formulas exact,
  matmul/reduction orders selectable; see docs/runtimes/turboquant-rs.md);
* :mod:`tqref.profiles.llamacpp` — llama.cpp forks' turbo2/3/4 (v1, v3) and tq3_0 blocks;
* :mod:`tqref.profiles.convert` — moving data between runtimes through float32.

Submodules are imported on demand: ``from tqref.profiles import llamacpp``.
"""

__all__ = ["convert", "llamacpp", "turboquant_rs", "turboquant_rs_cache"]
