"""Conformance runner: ``python -m hyvideo.conformance PATH``."""

from hyvideo.conformance.core import Case, Result, discover, run_case, run_manifest, worst_ratio

__all__ = ["Case", "Result", "discover", "run_case", "run_manifest", "worst_ratio"]
