"""``python -m hyvideo.conformance PATH [PATH ...]``: run every case and manifest under PATHs.

Prints one line per case (``PASS|FAIL <kind> <name> worst=<ratio>``) and a last line
``N passed, M failed``; exits 0 only when nothing failed and at least one case passed.
"""

from __future__ import annotations

import argparse
import sys

import torch

from hyvideo.dit.attention import BACKENDS
from hyvideo.conformance.core import Case, discover, run_case, run_manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyvideo.conformance", description=__doc__)
    parser.add_argument("paths", nargs="+", help="conformance folders, case folders or manifests")
    parser.add_argument("--kind", action="append", help="run only these kinds (repeatable)")
    parser.add_argument("--attention", default="sdpa", choices=BACKENDS,
                        help="attention backend for the DiT kinds (default sdpa)")
    parser.add_argument("--device", default="cpu", help="device for the DiT kinds (default cpu)")
    args = parser.parse_args(argv)

    # The goldens are float32 CPU results; TF32 would exceed their tolerances on a GPU.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    cases, manifests = discover(args.paths)
    if not cases and not manifests:
        print(f"error: no case.json or manifests/*.json under {' '.join(args.paths)}",
              file=sys.stderr)
        return 2
    passed = failed = 0
    for path in cases:
        case = Case.open(path)
        if args.kind and case.kind not in args.kind:
            continue
        result = run_case(case, attention=args.attention, device=args.device)
        print(result.line(), flush=True)
        passed, failed = passed + result.passed, failed + (not result.passed)
    for path in manifests:
        if args.kind and "manifest" not in args.kind:
            continue
        result = run_manifest(path)
        print(result.line(), flush=True)
        passed, failed = passed + result.passed, failed + (not result.passed)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
