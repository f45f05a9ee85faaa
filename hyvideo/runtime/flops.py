"""FLOPs of one DiT forward, counted from the configuration (for throughput and MFU figures).

Conventions (those of the issue's figure: 12.07 PFLOP per forward of the released 13B model at
720x1280x129, about 87% of it attention):

* A Linear (and the patch-embedding Conv3d, whose kernel equals its stride) applied to ``M``
  tokens costs ``2 * M * K * N`` (one multiply and one add per weight and token). Bias adds,
  norms, activations, RoPE, modulation arithmetic and the softmax are not counted.
* Attention over ``S`` tokens with ``H`` heads of width ``D`` costs ``4 * S^2 * D * H``:
  ``2 * S^2 * D`` per head for ``Q K^T`` and as much for ``P V``.
* Every double and single block sees ``S = N + L`` tokens: ``N`` image tokens (latent T x H x W
  divided by the patch) and all ``L`` text tokens of the text window (``text_len``, 256),
  padding included -- the reference's varlen attention and Linears process the padding tokens
  too (in their own attention group). Our DiT drops padding past the longest prompt, so it does
  slightly less work than counted (at 720p with 40 valid tokens: 0.4% less); the count is the
  model's nominal work, the same for every implementation compared.
* Per-video vectors (timestep, guidance and pooled-text embedders, every block's modulation
  Linear) run once per video, not per token; the token refiner runs on the ``L`` text tokens.

Released model at 720x1280x129 (latent 33x90x160, patch 1x2x2: N = 118,800, L = 256):
attention 60 x 4 x 119,056^2 x 3072 = 10.45 PFLOP, block Linears 60 x 24 x 119,056 x 3072^2 =
1.62 PFLOP, everything else 0.2 TFLOP: 12.07 PFLOP, 86.6% attention.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hyvideo.dit.config import DiTConfig

TIMESTEP_FREQ_DIM = 256  # width of the sinusoidal timestep features (TimestepEmbedder)


def linear_flops(tokens: int, fan_in: int, fan_out: int) -> int:
    """``2 * tokens * fan_in * fan_out``: one Linear applied to ``tokens`` rows."""
    return 2 * tokens * fan_in * fan_out


def attention_flops(queries: int, keys: int, hidden: int) -> int:
    """``Q K^T`` plus ``P V`` over all heads: ``4 * queries * keys * hidden`` (hidden = H * D)."""
    return 4 * queries * keys * hidden


@dataclass(frozen=True)
class DiTFlops:
    """FLOPs of one DiT forward, by part (all for the whole batch)."""

    double_linear: int  # double blocks: qkv, proj, MLP of both streams, modulation
    double_attention: int
    single_linear: int  # single blocks: linear1, linear2, modulation
    single_attention: int
    refiner: int  # txt_in: input embedder, conditioning MLPs, refiner blocks (incl. attention)
    embedders: int  # img_in, time_in, vector_in, guidance_in
    final: int  # final layer: modulation and the projection to patch pixels

    @property
    def attention(self) -> int:
        """Attention in the double and single blocks (the refiner's is in ``refiner``)."""
        return self.double_attention + self.single_attention

    @property
    def total(self) -> int:
        return (self.double_linear + self.double_attention + self.single_linear
                + self.single_attention + self.refiner + self.embedders + self.final)

    @property
    def attention_share(self) -> float:
        return self.attention / self.total

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "attention": self.attention, "total": self.total,
                "attention_share": self.attention_share}


def image_tokens(config: DiTConfig, latent_thw: tuple[int, int, int]) -> int:
    """Image tokens of a latent (T, H, W): the product of each axis divided by its patch."""
    return math.prod(config.token_grid(latent_thw))


def _refiner_flops(c: DiTConfig, text: int) -> int:
    h, dt = c.hidden_size, c.text_states_dim
    if c.text_projection != "single_refiner":  # TextProjection: linear_1 -> SiLU -> linear_2
        return linear_flops(text, dt, h) + linear_flops(text, h, h)
    mlp = int(h * c.mlp_width_ratio)
    per_video = (linear_flops(1, TIMESTEP_FREQ_DIM, h) + linear_flops(1, h, h)  # t_embedder
                 + linear_flops(1, dt, h) + linear_flops(1, h, h)  # c_embedder on the mean state
                 + c.token_refiner_depth * linear_flops(1, h, 2 * h))  # adaLN (2 gates) per block
    block = (linear_flops(text, h, 3 * h) + linear_flops(text, h, h)  # qkv, proj
             + linear_flops(text, h, mlp) + linear_flops(text, mlp, h)  # fc1, fc2
             + attention_flops(text, text, h))
    return linear_flops(text, dt, h) + per_video + c.token_refiner_depth * block


def dit_forward_flops(config: DiTConfig, latent_thw: tuple[int, int, int], text_tokens: int = 256,
                      batch: int = 1) -> DiTFlops:
    """FLOPs of one forward of the DiT on ``batch`` latents of size ``latent_thw`` (T, H, W)
    with ``text_tokens`` text positions each (the module docstring gives the conventions).

    With real classifier-free guidance one denoising step is one forward of batch 2.
    """
    if text_tokens < 0 or batch < 1:
        raise ValueError(f"text_tokens must be >= 0 and batch >= 1, got {text_tokens} and {batch}")
    c = config
    h, mlp = c.hidden_size, c.mlp_hidden_dim
    n = image_tokens(c, latent_thw)
    s = n + text_tokens
    # Double block, per stream: qkv (3h), proj (h), fc1 (mlp), fc2 (mlp -> h); per video: the
    # modulation Linear h -> 6h of each stream.
    double_lin = (linear_flops(s, h, 3 * h) + linear_flops(s, h, h) + linear_flops(s, h, mlp)
                  + linear_flops(s, mlp, h) + 2 * linear_flops(1, h, 6 * h))
    # Single block: linear1 h -> 3h + mlp, linear2 h + mlp -> h; modulation h -> 3h per video.
    single_lin = (linear_flops(s, h, 3 * h + mlp) + linear_flops(s, h + mlp, h)
                  + linear_flops(1, h, 3 * h))
    attn = attention_flops(s, s, h)
    timestep_mlp = linear_flops(1, TIMESTEP_FREQ_DIM, h) + linear_flops(1, h, h)
    embedders = (linear_flops(n, c.in_channels * math.prod(c.patch_size), h)  # img_in
                 + timestep_mlp  # time_in
                 + linear_flops(1, c.text_states_dim_2, h) + linear_flops(1, h, h)  # vector_in
                 + (timestep_mlp if c.guidance_embed else 0))  # guidance_in
    final = linear_flops(1, h, 2 * h) + linear_flops(n, h, math.prod(c.patch_size) * c.out_channels)
    return DiTFlops(
        double_linear=batch * c.mm_double_blocks_depth * double_lin,
        double_attention=batch * c.mm_double_blocks_depth * attn,
        single_linear=batch * c.mm_single_blocks_depth * single_lin,
        single_attention=batch * c.mm_single_blocks_depth * attn,
        refiner=batch * _refiner_flops(c, text_tokens),
        embedders=batch * embedders,
        final=batch * final,
    )
