"""The torchvision.transforms names ComfyUI's modules touch at import time; none is used by HunyuanVideo."""

import enum
from types import SimpleNamespace


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _unavailable(*args, **kwargs):
    raise NotImplementedError("torchvision stand-in: the test ComfyUI has no real torchvision")


Compose = Normalize = Resize = ToTensor = _unavailable
functional = SimpleNamespace(resize=_unavailable)
