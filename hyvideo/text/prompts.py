"""The official LLM prompt templates (the reference's ``hyvideo/constants.py`` ``PROMPT_TEMPLATE``),
text-to-video and image-to-video (HunyuanVideo-I2V's ``constants.py``).

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
    "ImagePromptTemplate",
    "I2V_VIDEO_TEMPLATE",
    "I2V_IMAGE_TEMPLATE",
    "I2V_PROMPT_TEMPLATES",
    "NEGATIVE_PROMPT_I2V",
    "i2v_template_for_frames",
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

# The five aspects both video templates list (T2V and I2V), as the reference writes them.
_VIDEO_ASPECTS = (
        "1. The main content and theme of the video."
        "2. The color, shape, size, texture, quantity, text, and spatial relationships of the "
        "objects."
        "3. Actions, events, behaviors temporal relationships, physical movement changes of the "
        "objects."
        "4. background environment, light, style and atmosphere."
        "5. camera angles, movements, and transitions used in the video:"
)

# The strings are the reference's, byte for byte, including its missing spaces after "video."
# and "objects." ("...of the video.2. The color...").
VIDEO_TEMPLATE = PromptTemplate(
    name="dit-llm-encode-video",
    template=(
        _HEADER_SYSTEM + "Describe the video by detailing the following aspects: " + _VIDEO_ASPECTS
        + _USER_TURN
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



@dataclass(frozen=True)
class ImagePromptTemplate(PromptTemplate):
    """An I2V template: the system block holds one ``<image>`` token that the LLaVA encoder
    replaces by ``image_emb_len`` image features.

    Attributes (the reference's constants, in input-token / merged-sequence positions):
        image_emb_start, image_emb_end: the image features' span in the merged sequence (the
            ``<image>`` token's input position and that plus ``image_emb_len``).
        image_emb_len: image features per image (24 x 24 patches of CLIP ViT-L/14-336).
        double_return_token_id: ``"\\n\\n"`` (271); the last one ends the assistant header.
    """

    image_emb_start: int = 5
    image_emb_end: int = 581
    image_emb_len: int = 576
    double_return_token_id: int = 271


_ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"

# The system prompt names the reference image; unlike the T2V video template, the system turn's
# <|eot_id|> is followed by "\n\n", and the assistant header closes the text.
I2V_VIDEO_TEMPLATE = ImagePromptTemplate(
    name="dit-llm-encode-video-i2v",
    template=(
        _HEADER_SYSTEM + "<image>\nDescribe the video by detailing the following aspects according "
        "to the reference image: " + _VIDEO_ASPECTS + "<|eot_id|>\n\n"
        "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>" + _ASSISTANT
    ),
    crop_start=103,
)

# Never usable in I2V mode (the reference's encoder raises for a 1-frame video); kept for the
# record. Its official crop_start 36 does not even match its 38-token prefix.
I2V_IMAGE_TEMPLATE = ImagePromptTemplate(
    name="dit-llm-encode-i2v",
    template=(
        _HEADER_SYSTEM + "<image>\nDescribe the image by detailing the color, shape, size, "
        "texture, quantity, text, spatial relationships of the objects and background:"
        + _USER_TURN
        + _ASSISTANT
    ),
    crop_start=36,
)

I2V_PROMPT_TEMPLATES: dict[str, ImagePromptTemplate] = {
    t.name: t for t in (I2V_VIDEO_TEMPLATE, I2V_IMAGE_TEMPLATE)
}
PROMPT_TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t for t in (VIDEO_TEMPLATE, IMAGE_TEMPLATE, *I2V_PROMPT_TEMPLATES.values())
}

# The reference's default negative prompt in I2V mode (HunyuanVideo-I2V constants.py).
NEGATIVE_PROMPT_I2V = (
    "deformation, a poor composition and deformed video, bad teeth, bad eyes, bad limbs"
)


def template_for_frames(num_frames: int) -> PromptTemplate:
    """The reference's choice: the image template for a 1-frame video, else the video template."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return IMAGE_TEMPLATE if num_frames == 1 else VIDEO_TEMPLATE


def i2v_template_for_frames(num_frames: int) -> ImagePromptTemplate:
    """The I2V video template; a 1-frame request is refused, as the reference's encoder does
    (it raises for ``data_type`` "image" in I2V mode)."""
    if num_frames <= 1:
        raise ValueError(
            f"image-to-video needs a video of more than 1 frame, got num_frames={num_frames}"
        )
    return I2V_VIDEO_TEMPLATE
