"""The torchvision.transforms names ComfyUI's modules touch at import time; none is used by HunyuanVideo."""

import enum
from types import SimpleNamespace


class InterpolationMode(enum.Enum):
    # transformers maps PIL's resampling filters onto these names when torchvision is present.
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def _unavailable(*args, **kwargs):
    raise NotImplementedError("torchvision stand-in: the test ComfyUI has no real torchvision")


Compose = Normalize = Resize = ToTensor = _unavailable
functional = SimpleNamespace(resize=_unavailable)
