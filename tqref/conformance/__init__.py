"""Conformance: golden vectors, their schemas and linter, a verifier, an adapter protocol and a
statistical audit.

The data lives in ``conformance/v1/`` at the repository root (written only by
:mod:`tqref.conformance.generate`); this package holds the code that writes, checks and
consumes it:

    encoding           tensors as little-endian hex with readable decimals; canonical JSON text
    spec               test types, their fields, protocol operations and flags (one place)
    families           the KV-cache and runtime-profile test types (registered when importable)
    schemas            JSON schemas generated from ``spec`` (written next to the vectors)
    schema             a small self-contained JSON-schema validator (the subset the schemas use)
    generate           ``python -m tqref.conformance.generate --out conformance/v1``
    lint               ``python -m tqref.conformance.lint conformance/v1``
    loader             find the vector directory; iterate files -> groups -> tests
    compare            exact and tolerance comparisons with a first-mismatch description
    operations         what tqref computes for each protocol operation (generate, verify, adapter)
    verify             check the installed tqref (any backend) against the vectors
    report             outcomes and the per-file pass/fail table
    runner             drive an external adapter over the JSON-lines protocol
    adapter_reference  tqref itself behind the protocol (``python -m ...``)
    audit              statistical audit of any implementation (``tqref audit``)
    audit_adapters     audit adapters for tqref's own quantizers

Docs: conformance/README.md (the data), docs/conformance-protocol.md, docs/porting.md,
docs/audits.md.
"""

VERSION_DIR = "v1"
