"""The official LLM prompt templates (the reference's ``hyvideo/constants.py`` ``PROMPT_TEMPLATE``).

The prompt is inserted with ``str.format`` at ``{}``. ``crop_start`` is the number of tokens before
``{}`` *including* BOS: the encoder drops that many hidden states, so the kept sequence starts at
the first prompt token. The reference hard-codes these counts; :func:`hyvideo.text.tokenizer.
derive_crop_start` recomputes them from the tokenizer and the LLM encoder checks they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PromptTemplate",
    "PROMPT_TEMPLATES",
    "VIDEO_TEMPLATE",
    "IMAGE_TEMPLATE",
    "template_for_frames",
]


@dataclass(frozen=True)
class PromptTemplate:
    """A chat template for the LLM text encoder.

    Attributes:
        name: the reference's key (``dit-llm-encode-video`` or ``dit-llm-encode``).
        template: the text with one ``{}`` where the prompt goes.
        crop_start: official number of template tokens before ``{}``, BOS included.
    """

    name: str
    template: str
    crop_start: int

    def format(self, prompt: str) -> str:
        """The full text given to the tokenizer for ``prompt``."""
        return self.template.format(prompt)

    @property
    def prefix(self) -> str:
        """The template text before ``{}`` (what ``crop_start`` counts, plus BOS)."""
        return self.template.split("{}", 1)[0]


_HEADER_SYSTEM = "<|start_header_id|>system<|end_header_id|>\n\n"
_USER_TURN = "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"

# The strings are the reference's, byte for byte, including its missing spaces after "video."
# and "objects." ("...of the video.2. The color...").
VIDEO_TEMPLATE = PromptTemplate(
    name="dit-llm-encode-video",
    template=(
        _HEADER_SYSTEM + "Describe the video by detailing the following aspects: "
        "1. The main content and theme of the video."
        "2. The color, shape, size, texture, quantity, text, and spatial relationships of the "
        "objects."
        "3. Actions, events, behaviors temporal relationships, physical movement changes of the "
        "objects."
        "4. background environment, light, style and atmosphere."
        "5. camera angles, movements, and transitions used in the video:" + _USER_TURN
    ),
    crop_start=95,
)

IMAGE_TEMPLATE = PromptTemplate(
    name="dit-llm-encode",
    template=(
        _HEADER_SYSTEM
        + "Describe the image by detailing the color, shape, size, texture, quantity, text, "
        "spatial relationships of the objects and background:" + _USER_TURN
    ),
    crop_start=36,
)

PROMPT_TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (VIDEO_TEMPLATE, IMAGE_TEMPLATE)}


def template_for_frames(num_frames: int) -> PromptTemplate:
    """The reference's choice: the image template for a 1-frame video, else the video template."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return IMAGE_TEMPLATE if num_frames == 1 else VIDEO_TEMPLATE
