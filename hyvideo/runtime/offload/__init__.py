"""Where the weights live while a video is generated: the ``--offload`` modes (the engines are
in :mod:`~hyvideo.runtime.offload.modes` and :mod:`~hyvideo.runtime.offload.block_swap`,
imported only when a mode needs them)."""

from hyvideo.runtime.offload.config import MODES, Offload, OffloadConfig
from hyvideo.runtime.offload.wrap import offload_components

__all__ = ["MODES", "Offload", "OffloadConfig", "offload_components"]
