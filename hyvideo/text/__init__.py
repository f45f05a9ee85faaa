"""Text encoders: the llava-llama-3 LLM (``text_encoder``) and CLIP-L (``text_encoder_2``)."""

from hyvideo.text.clip import CLIPTextEncoder, load_clip_encoder, random_clip_encoder
from hyvideo.text.encoder import TextConditioning, TextEncoders, load_text_encoders
from hyvideo.text.extract import ExtractError, extract_text_encoder
from hyvideo.text.llm import LLMEncodeSettings, LLMTextEncoder, load_llm_encoder, random_llm_encoder
from hyvideo.text.prompts import (
    IMAGE_TEMPLATE,
    PROMPT_TEMPLATES,
    VIDEO_TEMPLATE,
    PromptTemplate,
    template_for_frames,
)
from hyvideo.text.tokenizer import (
    build_llava_llama3_tokenizer,
    derive_crop_start,
    llama3_tokenizer_json,
    load_clip_tokenizer,
    load_llm_tokenizer,
)

__all__ = [
    "CLIPTextEncoder",
    "ExtractError",
    "IMAGE_TEMPLATE",
    "LLMEncodeSettings",
    "LLMTextEncoder",
    "PROMPT_TEMPLATES",
    "PromptTemplate",
    "TextConditioning",
    "TextEncoders",
    "VIDEO_TEMPLATE",
    "build_llava_llama3_tokenizer",
    "derive_crop_start",
    "extract_text_encoder",
    "llama3_tokenizer_json",
    "load_clip_encoder",
    "load_clip_tokenizer",
    "load_llm_encoder",
    "load_llm_tokenizer",
    "load_text_encoders",
    "random_clip_encoder",
    "random_llm_encoder",
    "template_for_frames",
]
