"""Cache configuration names -> caches: the one parser of ``--configs`` (tqref evaluate-model).

A name is dash-separated tokens: a *head* naming the family, then the family's *bits* token
where it has one, then *options* in any order::

    f32 | f16                                   exact caches (kv.ExactCache)
    q8_0 | q5_0 | q4_0                          llama.cpp block caches (kv.BlockCache)
    mse-k4v4 | prod-k3v3[-orthogonal] ...       tqref.KVCache, key bits K, value bits V

Options (:data:`OPTIONS`, each a regex over one token and the ``tqref.KVCache`` keyword
arguments it sets): ``gaussian`` / ``orthogonal`` / ``rademacher`` (prod: QJL projection;
prod's default is the paper's ``gaussian``), ``haar`` / ``hadamard`` (rotation),
``debiased`` (mse: unbiased scores), ``dv`` (debiased values), ``f16norms`` (norms stored
as float16); the tqref/kv options (docs/kv-cache.md §7): ``r<R>`` (float16 residual window of R
tokens), ``s<S>`` (S float16 sink tokens), ``o`` / ``o<N>`` (outlier split, static channels
calibrated on 64 / N tokens), ``opt`` (outlier split, per-token channels), ``e<n>f16`` /
``e<n>k<K>v<V>`` (the first and last n layers in float16 / at K, V bits). ``paper-2.5`` and
``paper-3.5`` are the paper's outlier presets (tqref.kv.PRESETS), with the same options. To add an option, append an :class:`Option` to :data:`OPTIONS`; to add a
family, add a :class:`Family` to :data:`FAMILIES`. Nothing else parses names.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from . import kv

#: the configurations of the issue's table, in its order (plus the exact f32 baseline)
DEFAULT_CONFIGS = ("f32", "f16", "q8_0", "q5_0", "q4_0", "mse-k4v4", "mse-k3v3", "mse-k4v2", "mse-k2v2",
                   "prod-k3v3-orthogonal", "prod-k3v3-gaussian")
#: the cache every other one is compared with (KL, top-1)
REFERENCE_CONFIG = "f32"
_BITS = re.compile(r"k(\d+)v(\d+)$")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option token: ``pattern`` (full match) -> ``kwargs(match)`` for the families named."""

    pattern: str
    families: tuple
    kwargs: Callable
    help: str = ""


@dataclasses.dataclass(frozen=True)
class Family:
    """A cache family: how its name starts, whether a kXvY token follows, how to build it."""

    heads: tuple
    has_bits: bool
    build: Callable  # (head, kwargs, num_layers, num_kv_heads, head_dim, seed, backend) -> cache
    defaults: dict = dataclasses.field(default_factory=dict)


def _build_exact(head, kwargs, layers, heads, dim, seed, backend):
    return kv.ExactCache(layers, heads, dim, dtype=head)


def _build_block(head, kwargs, layers, heads, dim, seed, backend):
    return kv.BlockCache(layers, heads, dim, qtype=head)


def _build_turboquant(head, kwargs, layers, heads, dim, seed, backend):
    from ..cache import KVCache

    if head == "paper":
        if "outliers" not in kwargs:
            raise ValueError("configs: expected 'paper-2.5' or 'paper-3.5' (the preset), got 'paper' without one")
        return KVCache(layers, heads, dim, seed=seed, backend=backend, **kwargs)
    return KVCache(layers, heads, dim, mode=head, seed=seed, backend=backend, **kwargs)


def _outliers(m):
    from ..kv import OutlierSpec

    if m.group(1) == "pt":
        return {"outliers": OutlierSpec(selection="per-token")}
    return {"outliers": OutlierSpec(calibration_tokens=int(m.group(1)))} if m.group(1) else {"outliers": OutlierSpec()}


def _ends(m):
    n, bits = int(m.group(1)), ("float16" if m.group(2) is None else (int(m.group(2)), int(m.group(3))))
    return {"layer_bits": {layer: bits for i in range(n) for layer in (i, -1 - i)}}


def _preset(m):
    from ..kv import PRESETS

    return dict(PRESETS["paper-" + m.group(0)])


FAMILIES = {
    "exact": Family(tuple(kv.EXACT_DTYPES), False, _build_exact),
    "llama.cpp": Family(tuple(kv.BLOCK_TYPES), False, _build_block),
    "turboquant": Family(("mse", "prod"), True, _build_turboquant),
    "turboquant-preset": Family(("paper",), False, _build_turboquant),
}

OPTIONS = [
    Option(r"gaussian|orthogonal|rademacher", ("prod",), lambda m: {"projection": m.group(0)},
           "QJL projection S"),
    Option(r"haar|hadamard", ("mse", "prod"), lambda m: {"rotation": m.group(0)}, "rotation Π"),
    Option(r"debiased", ("mse",), lambda m: {"debiased": True}, "divide key scores by α"),
    Option(r"dv", ("mse", "prod"), lambda m: {"debiased_values": True}, "divide values by α_v"),
    Option(r"f16norms", ("mse", "prod"), lambda m: {"norm_dtype": "float16"}, "norms stored as float16"),
    Option(r"2\.5|3\.5", ("paper",), _preset, "the paper's outlier preset"),
    Option(r"r(\d+)", ("mse", "prod", "paper"), lambda m: {"residual_length": int(m.group(1))},
           "float16 residual window"),
    Option(r"s(\d+)", ("mse", "prod", "paper"), lambda m: {"sink_tokens": int(m.group(1))}, "float16 sink tokens"),
    Option(r"o(pt|\d+)?", ("mse",), _outliers, "outlier-channel split"),
    Option(r"e(\d+)(?:f16|k(\d+)v(\d+))", ("mse", "prod", "paper"), _ends, "first/last layers' bits"),
]


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """A parsed name: family, head token and the keyword arguments of its cache."""

    name: str
    family: str
    head: str
    kwargs: tuple  # sorted (key, value) pairs

    def build(self, num_layers: int, num_kv_heads: int, head_dim: int, *, seed: int = 0, backend: str = "numba"):
        """A new, empty cache of this configuration."""
        fam = FAMILIES[self.family]
        return fam.build(self.head, dict(self.kwargs), num_layers, num_kv_heads, head_dim, seed, backend)


def _family_of(head: str):
    for key, fam in FAMILIES.items():
        if head in fam.heads:
            return key, fam
    return None, None


def parse(name: str) -> CacheConfig:
    """Parse one configuration name (module docstring); ValueError naming the bad token."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"configs: expected a cache configuration name, got {name!r}")
    tokens = name.strip().lower().split("-")
    family, fam = _family_of(tokens[0])
    if fam is None:
        heads = sorted(h for f in FAMILIES.values() for h in f.heads)
        raise ValueError(f"configs: expected a name starting with one of {heads}, got {name!r}")
    head, rest = tokens[0], tokens[1:]
    kwargs = dict(fam.defaults)
    if fam.has_bits:
        m = _BITS.match(rest[0]) if rest else None
        if m is None:
            raise ValueError(f"configs: expected '{head}-k<key bits>v<value bits>' (e.g. {head}-k4v4), got {name!r}")
        kwargs.update(key_bits=int(m.group(1)), value_bits=int(m.group(2)))
        rest = rest[1:]
    for token in rest:
        for opt in OPTIONS:
            m = re.fullmatch(opt.pattern, token)
            if m and head in opt.families:
                kwargs.update(opt.kwargs(m))
                break
        else:
            known = [o.pattern for o in OPTIONS if head in o.families]
            raise ValueError(f"configs: expected options of '{head}' among {known}, got {token!r} in {name!r}")
    return CacheConfig(name=name.strip(), family=family, head=head, kwargs=tuple(sorted(kwargs.items())))


def parse_list(text) -> list:
    """Comma-separated names (or a list of names) -> [CacheConfig], duplicates rejected."""
    names = [s for s in (text.split(",") if isinstance(text, str) else list(text)) if s.strip()]
    if not names:
        raise ValueError(f"configs: expected at least one configuration name, got {text!r}")
    parsed = [parse(n) for n in names]
    seen = set()
    for c in parsed:
        if c.name in seen:
            raise ValueError(f"configs: expected each configuration once, got {c.name!r} twice")
        seen.add(c.name)
    return parsed
