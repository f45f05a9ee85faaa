"""``python -m hyvideo.conformance PATH [PATH ...]``: run every case and manifest under PATHs.

Prints one line per case (``PASS|FAIL <kind> <name> worst=<ratio>``) and a last line
``N passed, M failed``; exits 0 only when nothing failed and at least one case passed. A case
that cannot be read (a cut-off ``case.json``, one without ``kind``, a manifest that is not JSON)
is a FAIL line naming it and the problem; the other cases still run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hyvideo.apps.cli import OneLineParser, check_device, fail
from hyvideo.conformance.core import (
    RUNNERS,
    Result,
    discover,
    open_case,
    run_case,
    run_manifest,
)
from hyvideo.dit.attention import BACKENDS


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m hyvideo.conformance", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="conformance folders, case folders or manifests")
    parser.add_argument("--kind", action="append", help="run only these kinds (repeatable)")
    parser.add_argument("--attention", default="sdpa", choices=BACKENDS,
                        help="attention backend for the DiT kinds (default sdpa)")
    parser.add_argument("--device", default="cpu", help="device for the DiT kinds (default cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_or_exit_code(argv)
    if isinstance(args, int):
        return args
    unknown = sorted(set(args.kind or ()) - {*RUNNERS, "manifest"})
    if unknown:
        return fail(f"--kind {unknown[0]}: no such kind; choose from manifest, {', '.join(sorted(RUNNERS))}")
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        return fail(f"{missing[0]}: no such file or folder (give conformance folders, case folders or manifests)")
    try:
        device = check_device(args.device)
    except ValueError as exc:
        return fail(str(exc))

    # The goldens are float32 CPU results; TF32 would exceed their tolerances on a GPU.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    cases, manifests = discover(args.paths)
    if not cases and not manifests:
        return fail(f"no case.json or manifests/*.json under {' '.join(map(str, args.paths))}")
    results: list[Result] = []
    for path in cases:
        case = open_case(path)  # an unreadable case is reported whatever --kind asks for
        if isinstance(case, Result):
            results.append(report(case))
        elif not args.kind or case.kind in args.kind:
            results.append(report(run_case(case, attention=args.attention, device=str(device))))
    for path in manifests:
        if not args.kind or "manifest" in args.kind:
            results.append(report(run_manifest(path)))
    passed = sum(r.passed for r in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) and passed >= 1 else 1


def report(result: Result) -> Result:
    print(result.line(), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
