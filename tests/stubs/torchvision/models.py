"""The torchvision.models names ComfyUI's modules reference; calling one is an error here."""


def efficientnet_v2_s(*args, **kwargs):
    raise NotImplementedError("torchvision stand-in: the test ComfyUI has no real torchvision")
