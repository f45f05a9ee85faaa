"""Text encoders: the llava-llama-3 LLM (``text_encoder``), CLIP-L (``text_encoder_2``) and, for
image-to-video, the full LLaVA prompt+image encoder (``text_encoder_i2v``)."""

from hyvideo.text.clip import CLIPTextEncoder, load_clip_encoder, random_clip_encoder
from hyvideo.text.encoder import TextConditioning, TextEncoders, load_text_encoders
from hyvideo.text.extract import ExtractError, extract_text_encoder
from hyvideo.text.llava import (
    I2VTextEncoders,
    LlavaEncodeSettings,
    LlavaTextImageEncoder,
    black_image,
    interleave_for,
    load_i2v_text_encoders,
    load_llava_encoder,
    random_llava_encoder,
    tiny_llava_config,
)
from hyvideo.text.llm import LLMEncodeSettings, LLMTextEncoder, load_llm_encoder, random_llm_encoder
from hyvideo.text.prompts import (
    I2V_VIDEO_TEMPLATE,
    IMAGE_TEMPLATE,
    NEGATIVE_PROMPT_I2V,
    PROMPT_TEMPLATES,
    VIDEO_TEMPLATE,
    ImagePromptTemplate,
    PromptTemplate,
    template_for_frames,
)
from hyvideo.text.tokenizer import (
    build_llava_llama3_tokenizer,
    derive_crop_start,
    load_clip_tokenizer,
    load_llm_tokenizer,
)

__all__ = [
    "CLIPTextEncoder",
    "ExtractError",
    "I2VTextEncoders",
    "I2V_VIDEO_TEMPLATE",
    "IMAGE_TEMPLATE",
    "ImagePromptTemplate",
    "LLMEncodeSettings",
    "LLMTextEncoder",
    "LlavaEncodeSettings",
    "LlavaTextImageEncoder",
    "NEGATIVE_PROMPT_I2V",
    "PROMPT_TEMPLATES",
    "PromptTemplate",
    "TextConditioning",
    "TextEncoders",
    "VIDEO_TEMPLATE",
    "black_image",
    "build_llava_llama3_tokenizer",
    "derive_crop_start",
    "extract_text_encoder",
    "interleave_for",
    "load_clip_encoder",
    "load_clip_tokenizer",
    "load_i2v_text_encoders",
    "load_llava_encoder",
    "load_llm_encoder",
    "load_llm_tokenizer",
    "load_text_encoders",
    "random_clip_encoder",
    "random_llava_encoder",
    "random_llm_encoder",
    "template_for_frames",
    "tiny_llava_config",
]
