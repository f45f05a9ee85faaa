"""The live-bytes tracker of scripts/memory_plan.py, importable by the tests."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("hyvideo_memory_plan", ROOT / "scripts" / "memory_plan.py")
memory_plan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(memory_plan)
LiveBytes = memory_plan.LiveBytes
