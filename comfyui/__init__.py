"""ComfyUI nodes for hyvideo (HunyuanVideo): link or copy this folder into ComfyUI/custom_nodes/.

The nodes import the installed ``hyvideo`` package (``pip install -e .`` in ComfyUI's Python) and
ComfyUI's own services; see README.md, section "ComfyUI nodes".
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
