"""Test-only stand-in for torchvision, put on PYTHONPATH of the ComfyUI server the tests start.

PyPI's torchvision wheels do not load beside the project's CPU torch, yet ComfyUI imports a few
torchvision names at start-up (Cosmos and Stable Cascade model files that HunyuanVideo never runs),
and transformers, seeing a torchvision, reads a few more at import time (``InterpolationMode``,
``torchvision.io``). This package gives those names; anything that would really compute raises.
"""

from types import SimpleNamespace

from . import models, transforms
from .transforms import _unavailable

io = SimpleNamespace(read_video=_unavailable)
__version__ = "0.0.0+hyvideo.stub"
__all__ = ["io", "models", "transforms"]
