"""Test-only stand-in for torchvision, put on PYTHONPATH of the ComfyUI server the tests start.

PyPI's torchvision wheels do not load beside the project's CPU torch, yet ComfyUI imports a few
torchvision names at start-up (Cosmos and Stable Cascade model files that HunyuanVideo never runs).
This module gives those names; anything that would really compute raises.
"""

from . import models, transforms

__version__ = "0.0.0+hyvideo.stub"
__all__ = ["models", "transforms"]
