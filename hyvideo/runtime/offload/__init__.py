"""Where the weights live while a video is generated: the ``--offload`` modes."""

from hyvideo.runtime.offload.config import MODES, Offload, OffloadConfig, offload_components
from hyvideo.runtime.offload.modes import ModelOffload, NoOffload, SequentialOffload, is_accelerator

__all__ = ["MODES", "ModelOffload", "NoOffload", "Offload", "OffloadConfig", "SequentialOffload",
           "is_accelerator", "offload_components"]
