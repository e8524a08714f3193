"""tqref/reference is the bottom layer: it imports nothing from the rest of tqref.

The product layer (tqref/cache.py, tqref/quantizers.py, backends, kv options, ...) builds on
the reference; an import the other way (``from .. import backends``) would make the normative
steps depend on what is built on them.
"""

import ast
from pathlib import Path

import tqref.reference

REFERENCE = Path(tqref.reference.__file__).parent


def upward_imports(source: str) -> list:
    """(line, text) of every import in ``source`` (a module of tqref/reference) that reaches
    outside tqref/reference: a relative import of level ≥ 2, or an absolute ``tqref.*`` other
    than ``tqref.reference.*``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            outside = node.level >= 2 or (node.level == 0 and _outside(module))
            if outside:
                found.append((node.lineno, "." * node.level + module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if _outside(alias.name)]
    return found


def _outside(module: str) -> bool:
    return (module == "tqref" or module.startswith("tqref.")) and not (
        module == "tqref.reference" or module.startswith("tqref.reference."))


def test_the_checker_catches_upward_imports():
    source = ("from .. import backends\nfrom ..kv.tiered import Tiered\nimport tqref.quantizers\n"
              "from tqref import _validate\nfrom . import prng\nfrom tqref.reference import mse\nimport numpy\n"
              "def f():\n    from ..quantizers import TurboQuantMSE\n")
    assert [text for _, text in upward_imports(source)] == [
        "..", "..kv.tiered", "tqref.quantizers", "tqref", "..quantizers"]


def test_reference_imports_nothing_above_it():
    modules = sorted(REFERENCE.glob("*.py"))
    assert len(modules) >= 10  # the walk sees the package
    offenders = {path.name: found for path in modules
                 if (found := upward_imports(path.read_text(encoding="utf-8")))}
    assert offenders == {}
