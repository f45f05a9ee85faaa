"""Hyper-parameters of the DiT, with the official names (the reference's
``HYVideoDiffusionTransformer`` keyword arguments), so a reader of the official code finds the
same words here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hyvideo.checkpoints.keys import DIFFUSERS_DIT_DEFAULTS, DIT_CONFIG_NAMES


def config_from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


I2V_CONDITION_TYPES = (None, "token_replace", "latent_concat")


@dataclass(frozen=True)
class DiTConfig:
    """Hyper-parameters of ``HYVideoDiffusionTransformer`` (official argument names)."""

    hidden_size: int
    heads_num: int
    mm_double_blocks_depth: int
    mm_single_blocks_depth: int
    text_states_dim: int  # LLM hidden size (4096 for llava-llama-3-8b)
    text_states_dim_2: int  # pooled CLIP width (768 for CLIP-L)
    rope_dim_list: tuple[int, int, int]  # per-axis (t, h, w) rotary dims; sums to head_dim
    patch_size: tuple[int, int, int] = (1, 2, 2)
    in_channels: int = 16
    out_channels: int = 16
    mlp_width_ratio: float = 4.0
    mlp_act_type: str = "gelu_tanh"
    qkv_bias: bool = True
    qk_norm: bool = True
    qk_norm_type: str = "rms"
    guidance_embed: bool = False
    text_projection: str = "single_refiner"  # or "linear"
    use_attention_mask: bool = True
    rope_theta: float = 256.0
    token_refiner_depth: int = 2  # hard-coded in the reference, exposed here for clarity
    # Image-to-video (HunyuanVideo-I2V): "token_replace" (the current release; the image tokens of
    # latent frame 0 are modulated by their own vector) or "latent_concat" (the first release;
    # noise, image latent and mask concatenated: in_channels = 2 * out_channels + 1). The
    # reference takes it from its CLI; here it belongs to the model it describes.
    i2v_condition_type: str | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads_num:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by heads_num")
        if sum(self.rope_dim_list) != self.head_dim:
            raise ValueError(
                f"rope_dim_list {list(self.rope_dim_list)} must sum to head_dim {self.head_dim}"
            )
        if self.mlp_act_type != "gelu_tanh":
            raise ValueError(f"unsupported mlp_act_type {self.mlp_act_type!r}")
        if self.qk_norm and self.qk_norm_type != "rms":
            raise ValueError(f"unsupported qk_norm_type {self.qk_norm_type!r}")
        if self.text_projection not in ("single_refiner", "linear"):
            raise ValueError(f"unsupported text_projection {self.text_projection!r}")
        self._check_i2v()

    def _check_i2v(self) -> None:
        kind = self.i2v_condition_type
        if kind not in I2V_CONDITION_TYPES:
            raise ValueError(f"i2v_condition_type {kind!r}: use one of "
                             f"{', '.join(map(str, I2V_CONDITION_TYPES))}")
        want = {"token_replace": self.out_channels,
                "latent_concat": 2 * self.out_channels + 1}.get(kind, self.in_channels)
        if self.in_channels != want:
            raise ValueError(f"i2v_condition_type {kind!r} needs in_channels {want} "
                             f"(out_channels {self.out_channels}), got {self.in_channels}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads_num

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.hidden_size * self.mlp_width_ratio)

    def token_grid(self, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
        """Latent (T, H, W) -> token grid (T', H', W'): each axis divided by its patch."""
        pt, ph, pw = self.patch_size
        t, h, w = latent_thw
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent size {tuple(latent_thw)} is not divisible by the patch "
                             f"{tuple(self.patch_size)}")
        return t // pt, h // ph, w // pw

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTConfig:
        return config_from_dict(cls, data)


def dit_config_from_diffusers(config: Mapping[str, object]) -> DiTConfig:
    """``transformer/config.json`` of the diffusers layout -> our :class:`DiTConfig`.

    diffusers' ``image_condition_type`` (``token_replace``, ``latent_concat``: the I2V releases) is
    our ``i2v_condition_type``. Raises ``ValueError`` for a qk-norm other than RMS or an unknown
    condition type.
    """
    c = {**DIFFUSERS_DIT_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
    if c["qk_norm"] != "rms_norm":
        raise ValueError(f"qk_norm {c['qk_norm']!r} is not supported (HunyuanVideo uses rms_norm)")
    values = {ours: c[theirs] for theirs, ours in DIT_CONFIG_NAMES.items()}
    values["rope_dim_list"] = tuple(values["rope_dim_list"])
    return DiTConfig(
        hidden_size=int(c["num_attention_heads"]) * int(c["attention_head_dim"]),
        patch_size=(int(c["patch_size_t"]), int(c["patch_size"]), int(c["patch_size"])),
        qk_norm=True, qk_norm_type="rms", i2v_condition_type=c["image_condition_type"], **values,
    )


def dit_config_to_diffusers(config: DiTConfig) -> dict[str, object]:
    """Our :class:`DiTConfig` -> ``HunyuanVideoTransformer3DModel`` keyword arguments."""
    if config.patch_size[1] != config.patch_size[2]:
        raise ValueError(f"diffusers needs a square spatial patch, got {config.patch_size}")
    out: dict[str, object] = {theirs: getattr(config, ours) for theirs, ours in DIT_CONFIG_NAMES.items()}
    out["rope_axes_dim"] = tuple(config.rope_dim_list)
    out.update(attention_head_dim=config.head_dim, patch_size=config.patch_size[1],
               patch_size_t=config.patch_size[0], qk_norm="rms_norm")
    if config.i2v_condition_type is not None:
        out["image_condition_type"] = config.i2v_condition_type
    return out
