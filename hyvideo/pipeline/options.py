"""How to load a model: the load options grouped by concern.

:class:`LoadOptions` says which model and where its weights are
(:class:`~hyvideo.checkpoints.layouts.CheckpointPaths`), in which precision (:class:`Precisions`),
how text is encoded (:class:`TextSettings`), which LoRAs to merge and which attention kernel the
DiT uses. Each checks its values when it is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hyvideo.checkpoints.layouts import CheckpointPaths
from hyvideo.pipeline.types import UsageError, check_int
from hyvideo.pipeline.variants import PRECISIONS, ModelVariant, load_variant

TINY = "tiny-random"
TINY_I2V = "tiny-random-i2v"


def is_tiny(model: str) -> bool:
    """Whether ``model`` is a random-weight preset built in memory (no file is read)."""
    return model in (TINY, TINY_I2V)


@dataclass(frozen=True)
class Precisions:
    """Precision per component (the official flag names)."""

    precision: str = "bf16"  # the DiT
    vae_precision: str = "fp16"
    text_encoder_precision: str = "fp16"
    text_encoder_precision_2: str = "fp16"

    def __post_init__(self) -> None:
        for name, value in vars(self).items():  # by name: checked before torch is imported
            if value not in PRECISIONS:
                raise UsageError(f"{name.replace('_', ' ')}: unknown precision {value!r}; choose one of "
                                 f"{', '.join(PRECISIONS)}", name)


@dataclass(frozen=True)
class TextSettings:
    """How the text encoders read a prompt (the reference's CLI defaults)."""

    text_len: int = 256
    hidden_state_skip_layer: int = 2
    apply_final_norm: bool = False
    text_len_2: int = 77

    def __post_init__(self) -> None:
        check_int("text_len", self.text_len, 1, 4096)
        check_int("hidden_state_skip_layer", self.hidden_state_skip_layer, 0, 1000)
        check_int("text_len_2", self.text_len_2, 3, 77)


@dataclass(frozen=True)
class LoadOptions:
    """Which model, from where, in which precision, with which LoRAs."""

    model: str = "HYVideo-T/2-cfgdistill"
    paths: CheckpointPaths = field(default_factory=CheckpointPaths)
    precisions: Precisions = field(default_factory=Precisions)
    text: TextSettings = field(default_factory=TextSettings)
    loras: tuple = ()  # hyvideo.dit.lora.LoraSpec each
    lora_fuse: bool = True  # merge into the weights; False: switchable side branches
    attention: str = "auto"
    vae_tiling: bool = True
    autocast: bool = True  # the official autocast placement (DiT, VAE); False: --disable-autocast

    def __post_init__(self) -> None:
        if is_tiny(self.model):  # random weights built in memory: no file is read
            given = [name for name, value in self.paths.overrides.items() if value is not None]
            given += ["use_fp8"] if self.paths.use_fp8 else []
            if given:
                raise UsageError(f"{given[0].replace('_', ' ')} cannot be used with model {self.model}, which "
                                 "builds random weights in memory; drop it or choose a released model", given[0])
        if self.paths.i2v != self.variant.is_i2v:  # the variant says which files to read
            object.__setattr__(self, "paths", dataclasses.replace(self.paths, i2v=self.variant.is_i2v))

    @property
    def variant(self) -> ModelVariant:
        return load_variant(self.model)
