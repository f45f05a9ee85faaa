"""The live-bytes tracker of scripts/memory_plan.py, importable by the tests."""

from __future__ import annotations

import importlib.util
import sys

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("hyvideo_memory_plan", ROOT / "scripts" / "memory_plan.py")
memory_plan = sys.modules.get(_spec.name) or importlib.util.module_from_spec(_spec)
if _spec.name not in sys.modules:
    sys.modules[_spec.name] = memory_plan  # its dataclasses look their module up there
    _spec.loader.exec_module(memory_plan)
LiveBytes = memory_plan.LiveBytes
