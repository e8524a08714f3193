"""``tqref conformance``: check tqref or any implementation against the golden vectors.

    tqref conformance verify [--backend NAME|all] [--dir DIR] [--only SUBSTR] [--report FILE]
    tqref conformance run --cmd "ADAPTER COMMAND" [--timeout S] [--dir DIR] [--only SUBSTR] [--report FILE]
    tqref conformance lint [--dir DIR]
    tqref conformance generate --out DIR

Exit codes: 0 every check passed (and at least one ran); 1 a check failed or errored;
2 nothing could be checked (vectors not found, backend unavailable, adapter not startable).
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("conformance", help="golden-vector conformance (verify, run, lint, generate)",
                                   description=__doc__.split("\n\n")[0].replace("``", ""))
    sub = parser.add_subparsers(dest="conformance_command", metavar="ACTION")

    p = sub.add_parser("verify", help="check the installed tqref against the vectors")
    p.add_argument("--backend", default="reference",
                   help="backend for the quantizer operations: a name, or 'all' for every available one")
    _common(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("run", help="check an external implementation through an adapter (JSON lines)")
    p.add_argument("--cmd", required=True, help="adapter command line (split like a shell would; no shell "
                                                 "features: wrap in sh -c '...' for pipes or cd)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="restart a crashed/hung adapter at most this many times (default 3)")
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("lint", help="check the vector files (schemas, ids, counts, flags, format)")
    p.add_argument("--dir", help="conformance directory (default: conformance/v1 found upward from here)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("generate", help="(re)write the vectors from the reference")
    p.add_argument("--out", required=True, help="output directory, e.g. conformance/v1")
    p.set_defaults(func=cmd_generate)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _common(p) -> None:
    p.add_argument("--dir", help="conformance directory (default: conformance/v1 found upward from here, "
                                 "or $TQREF_CONFORMANCE_DIR)")
    p.add_argument("--only", action="append", metavar="SUBSTR",
                   help="only files whose name contains SUBSTR (repeatable)")
    p.add_argument("--report", metavar="FILE", help="write every outcome as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _root(args):
    from ..conformance.loader import find_dir

    try:
        return find_dir(args.dir)
    except FileNotFoundError as exc:
        print(f"tqref conformance: {exc}", file=sys.stderr)
        return None


def _roots(args, root) -> list:
    """``root`` and, when it was found (not given with --dir), the added families beside it (real-v1)."""
    import os

    from ..conformance.loader import ENV_DIR, added_dirs

    return [root] if args.dir or os.environ.get(ENV_DIR) else [root] + added_dirs(root)


def _progress(args, label):
    from .._progress import progress

    return lambda items: progress(items, label, enabled=not args.quiet and sys.stderr.isatty())


def _finish(reports, args, meta, impl_header) -> int:
    from ..conformance import report

    print(report.table(reports, impl_header=impl_header))
    details = report.failures(reports)
    if details:
        print()
        print(details)
    if args.report:
        report.write_json(args.report, reports, meta)
    ok = all(r.ok for r in reports) and any(r.count(report.PASS) for r in reports)
    return 0 if ok else 1


def cmd_verify(args) -> int:
    from ..backends import available, get  # (tqref.backends is also a function name in tqref/__init__)
    from ..conformance import verify

    root = _root(args)
    if root is None:
        return 2
    if args.backend == "all":
        names = available()
    else:
        try:
            get(args.backend)
        except (RuntimeError, ValueError) as exc:
            print(f"tqref conformance verify: {exc}", file=sys.stderr)
            return 2
        names = [args.backend]
    code = 0
    roots = _roots(args, root)
    for name in names:
        print(f"tqref conformance verify: backend {name!r}, vectors {', '.join(map(str, roots))}")
        reports = [r for d in roots
                   for r in verify.verify(d, name, only=args.only, progress=_progress(args, f"verify {name}"))]
        code = max(code, _finish(reports, args, {"command": "verify", "backend": name,
                                                 "dir": ", ".join(map(str, roots))}, "implementation"))
        print()
    return code


def cmd_run(args) -> int:
    from ..conformance import runner

    root = _root(args)
    if root is None:
        return 2
    try:
        reports, info = runner.run(root, args.cmd, timeout=args.timeout, max_restarts=args.max_restarts,
                                   only=args.only, progress=_progress(args, "run"))
    except runner.AdapterError as exc:
        print(f"tqref conformance run: the adapter could not be used ({exc.kind}): {exc}", file=sys.stderr)
        return 2
    hello = info["hello"]
    print(f"tqref conformance run: adapter {hello.get('implementation', '?')!r}, "
          f"{len(hello.get('ops', []))} operations offered, {info['restarts']} restart(s), vectors {root}")
    if info["stopped"]:
        print(f"stopped early: {info['stopped']}")
    return _finish(reports, args, {"command": "run", "adapter": args.cmd, "dir": str(root), **info}, "adapter")


def cmd_lint(args) -> int:
    from ..conformance import lint

    root = _root(args)
    if root is None:
        return 2
    code = 0
    for d in _roots(args, root):
        problems, files, tests = lint.lint_dir(d)
        for p in problems:
            print(p)
        print(f"lint: {files} files, {tests} tests, {len(problems)} problem(s) in {d}")
        code = max(code, 1 if problems else 0)
    return code


def cmd_generate(args) -> int:
    from ..conformance import generate

    return generate.main(["--out", args.out])
