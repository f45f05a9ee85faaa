"""HYVideoDiffusionTransformer: the HunyuanVideo MMDiT (dual-stream then single-stream blocks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from hyvideo.dit.config import DiTConfig
from hyvideo.dit.attention import HALF_DTYPES, AttentionGroups, check_backend
from hyvideo.dit.blocks import MMDoubleStreamBlock, MMSingleStreamBlock
from hyvideo.dit.layers import FinalLayer, MLPEmbedder, PatchEmbed, TextProjection, TimestepEmbedder
from hyvideo.dit.rope import rope_tables
from hyvideo.dit.token_refiner import SingleTokenRefiner


Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [N_img, head_dim]


@dataclass
class FirstFrame:
    """Image-to-video ``token_replace``: latent frame 0's image tokens take their own vector."""

    vec: torch.Tensor  # [B, C] token_replace_vec = time_in(0) + vector_in(pooled CLIP)
    tokens: int  # how many of this process's image tokens are frame 0 (always a prefix of them)


@dataclass
class BlockInputs:
    """What every transformer block of one forward shares."""

    vec: torch.Tensor  # [B, C] conditioning vector
    rope: Rope  # this process's image-token rows
    groups: AttentionGroups  # who attends to whom (text lengths)
    attention: str | Callable  # a backend name, or sequence parallelism's cross-rank attention
    token_groups: tuple = ()  # process groups holding the other image tokens (sequence parallel)
    first_frame: FirstFrame | None = None  # token_replace (I2V), when this process has frame-0 tokens

    @property
    def first_frame_args(self) -> tuple:
        """The blocks' trailing ``(first_vec, first_tokens)`` arguments; () without token_replace."""
        f = self.first_frame
        return () if f is None else (f.vec, f.tokens)


class TokenSplit(Protocol):
    """Sequence parallelism as the DiT sees it (:class:`hyvideo.runtime.parallel.TokenSplit`)."""

    group: object  # the process group sharing the image tokens
    attention: Callable  # attention across the ranks of ``group``

    def scatter(self, img: torch.Tensor, rope: Rope) -> tuple[torch.Tensor, Rope]: ...

    def first_row(self, num_tokens: int) -> int:
        """Index of this rank's first image token among all ``num_tokens`` (its chunk is contiguous)."""
        ...

    def gather(self, tokens: torch.Tensor) -> torch.Tensor: ...


class StepCache(Protocol):
    """A step cache (:mod:`hyvideo.runtime.cache`): runs the blocks, or reuses their last effect."""

    def run(self, dit: HYVideoDiffusionTransformer, img: torch.Tensor, txt: torch.Tensor,
            inputs: BlockInputs) -> torch.Tensor: ...


def transformer_blocks(module: object) -> list[nn.Module]:
    """The DiT's blocks in the order they run (double then single), or [] for other components."""
    lists = [getattr(module, name, None) for name in ("double_blocks", "single_blocks")]
    if not all(isinstance(blocks, nn.ModuleList) for blocks in lists):
        return []
    return [block for blocks in lists for block in blocks]


class HYVideoDiffusionTransformer(nn.Module):
    """The DiT. Attribute names reproduce the official state-dict keys exactly.

    Build it on the meta device and load weights with :func:`hyvideo.dit.loader.load_dit`, or
    build it on a real device for random-weight tests.
    """

    def __init__(self, config: DiTConfig, *, attention_backend: str = "sdpa",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        c = config
        kw = dict(device=device, dtype=dtype)
        self.config = c
        self.attention_backend = check_backend(attention_backend)
        h = c.hidden_size
        self.img_in = PatchEmbed(c.patch_size, c.in_channels, h, **kw)
        table = "i2v" if c.i2v_condition_type else "t2v"  # the release's reference frequencies
        if c.text_projection == "single_refiner":
            self.txt_in = SingleTokenRefiner(c.text_states_dim, h, c.heads_num, c.token_refiner_depth,
                                             c.mlp_width_ratio, c.qkv_bias, **kw, table=table)
        else:
            self.txt_in = TextProjection(c.text_states_dim, h, **kw)
        self.time_in = TimestepEmbedder(h, **kw, table=table)
        self.vector_in = MLPEmbedder(c.text_states_dim_2, h, **kw)
        self.guidance_in = TimestepEmbedder(h, **kw, table=table) if c.guidance_embed else None
        self.double_blocks = nn.ModuleList(
            MMDoubleStreamBlock(h, c.heads_num, c.mlp_hidden_dim, c.qkv_bias, c.qk_norm, **kw)
            for _ in range(c.mm_double_blocks_depth)
        )
        self.single_blocks = nn.ModuleList(
            MMSingleStreamBlock(h, c.heads_num, c.mlp_hidden_dim, c.qk_norm, **kw)
            for _ in range(c.mm_single_blocks_depth)
        )
        self.final_layer = FinalLayer(h, c.patch_size, c.out_channels, **kw)
        self.set_autocast(True)

    @property
    def dtype(self) -> torch.dtype:
        return self.img_in.proj.weight.dtype

    @property
    def autocast(self) -> torch.dtype | None:
        """The dtype of the official autocast placement, or None (see :meth:`set_autocast`)."""
        return self.final_layer.autocast

    def set_autocast(self, enabled: bool) -> None:
        """Compute where the official code computes under ``torch.autocast(gpu, <precision>)``.

        The reference runs the DiT under autocast whenever its precision is not float32 (and
        ``--disable-autocast`` is not given). Reproduced with explicit casts, so every device
        gives CUDA autocast's placement: LayerNorm in float32 and its output kept in float32
        through modulate (and the refiner's norms and masked mean), every linear in the model's
        precision -- the final layer's too, from its float32 weight -- and attention in it.
        ``enabled=False`` (``--disable-autocast``): every layer in its weights' dtype, the final
        layer's input cast up to its float32 weight. Nothing changes for a float32 model. Call
        again after changing the model's dtype.
        """
        dtype = self.dtype if enabled and self.dtype in HALF_DTYPES else None
        for module in self.modules():
            if hasattr(type(module), "autocast") and module is not self:
                module.autocast = dtype

    def token_grid(self, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
        """Latent (T, H, W) -> token grid (T', H', W') (:meth:`DiTConfig.token_grid`)."""
        return self.config.token_grid(latent_thw)

    def rope(self, latent_thw: tuple[int, int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) tables [N, head_dim] for a latent of size (T, H, W)."""
        return rope_tables(self.token_grid(latent_thw), self.config.rope_dim_list,
                           self.config.rope_theta, device=device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_states: torch.Tensor,
                text_mask: torch.Tensor | None, text_states_2: torch.Tensor,
                guidance: torch.Tensor | None = None, rope: Rope | None = None, *,
                step_cache: StepCache | None = None,
                token_split: TokenSplit | None = None) -> torch.Tensor:
        """Predict the flow for latent ``x``.

        Args:
            x: [B, C, T, H, W] latents.
            t: [B] timesteps on the 0..1000 scale (sigma * 1000).
            text_states: [B, L, text_states_dim] LLM states; padded rows never matter.
            text_mask: [B, L] int/bool, 1 = valid, padding at the end.
            text_states_2: [B, text_states_dim_2] pooled CLIP vector.
            guidance: [B] embedded guidance * 1000 (guidance-distilled models only).
            rope: optional precomputed (cos, sin); by default built from x's shape.
            step_cache: runs the blocks or reuses their last effect (denoising loops pass it).
            token_split: sequence parallelism; this process keeps its share of the image tokens
                after patch embedding and the output is gathered once at the end.

        Image-to-video needs no extra argument: ``config.i2v_condition_type`` says it. With
        ``token_replace`` the image tokens of latent frame 0 (the first H'*W') are modulated by
        ``token_replace_vec`` (:meth:`first_frame`); with ``latent_concat`` ``x`` has
        ``in_channels`` = 33 (noise, image latent on frame 0, mask) and the output 16.
        Returns:
            [B, out_channels, T, H, W]
        """
        grid = self.token_grid(tuple(x.shape[2:]))
        rope = rope if rope is not None else self.rope(tuple(x.shape[2:]), device=x.device)
        pooled = self.vector_in(text_states_2.to(self.dtype))  # [B, C], shared with token_replace
        vec = self.conditioning_vector(t, pooled, guidance)  # [B, C]
        img = self.img_in(x.to(self.dtype))  # [B, N, C]
        first_row = 0
        if token_split is not None:  # this rank's chunk: [B, N/P, C] and its RoPE rows
            first_row = token_split.first_row(img.shape[1])
            img, rope = token_split.scatter(img, rope)
        first_frame = self.first_frame(t, text_states_2, grid, first_row, img.shape[1], pooled=pooled)
        txt, mask = self.text_tokens(text_states, text_mask, t)  # [B, L', C], [B, L'] or None
        groups = AttentionGroups.from_text_mask(img.shape[1], mask, txt.shape[1])
        inputs = BlockInputs(vec, rope, groups, self.attention_backend, (), first_frame)
        if token_split is not None:
            inputs = BlockInputs(vec, rope, groups, token_split.attention, (token_split.group,), first_frame)

        if step_cache is not None:  # the cache decides whether the blocks run this step
            img = step_cache.run(self, img, txt, inputs)
        else:
            img = self.run_blocks_from(0, img, txt, inputs)
        out = self.final_layer(img, vec)  # [B, N, pt*ph*pw*C_out]
        if token_split is not None:
            out = token_split.gather(out)  # the one gather per forward
        return self.unpatchify(out, grid)

    def conditioning_vector(self, t: torch.Tensor, pooled: torch.Tensor,
                            guidance: torch.Tensor | None) -> torch.Tensor:
        """vec [B, C] = time_in(t) + pooled [+ guidance_in(guidance)], where ``pooled`` is
        vector_in(pooled CLIP) [B, C]."""
        vec = self.time_in(t) + pooled
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this model embeds guidance: pass guidance (embedded_cfg_scale*1000)")
            vec = vec + self.guidance_in(guidance)
        return vec

    def first_frame(self, t: torch.Tensor, text_states_2: torch.Tensor, grid: tuple[int, int, int],
                    first_row: int, num_local: int, *, pooled: torch.Tensor | None = None) -> FirstFrame | None:
        """token_replace (I2V): ``token_replace_vec = time_in(0) + vector_in(pooled CLIP)`` -- no
        guidance term -- and how many of this process's image tokens (rows ``first_row`` on, of
        ``num_local``) lie in latent frame 0 (the first H'*W' tokens: they run t-major).
        None for other models, or when none of this process's tokens is a frame-0 token.
        ``pooled``: vector_in(text_states_2) when the caller has it already."""
        if self.config.i2v_condition_type != "token_replace":
            return None
        tokens = min(max(grid[1] * grid[2] - first_row, 0), num_local)
        if tokens == 0:
            return None
        if pooled is None:
            pooled = self.vector_in(text_states_2.to(self.dtype))
        return FirstFrame(self.time_in(torch.zeros_like(t)) + pooled, tokens)

    def text_tokens(self, text_states: torch.Tensor, text_mask: torch.Tensor | None,
                    t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """LLM states [B, L, Dt] -> text tokens [B, L', C] and their mask, padding past the
        longest prompt dropped."""
        c = self.config
        mask = text_mask if c.use_attention_mask else None
        if c.text_projection == "single_refiner":  # under autocast: the states in their own dtype
            states = text_states if self.autocast is not None else text_states.to(self.dtype)
            txt = self.txt_in(states, t, mask, self.attention_backend)
        else:
            txt = self.txt_in(text_states.to(self.dtype))
        if mask is not None:
            # Padding tokens form their own attention group in every block and the final layer
            # reads image tokens only, so padding past the longest prompt cannot change the
            # output: drop it. With one prompt length per batch no mask is left at all.
            longest = int(mask.sum(dim=1).max())
            if longest < txt.shape[1]:  # a fresh tensor with standard strides, even for batch 1
                # (compiled blocks guard on strides; a size-1 batch slice keeps the old ones)
                txt = txt[:, :longest].clone(memory_format=torch.contiguous_format)
                mask = mask[:, :longest]
        return txt, mask

    def run_double_block(self, index: int, img: torch.Tensor, txt: torch.Tensor,
                         inputs: BlockInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Double block ``index`` alone: (img [B, N, C], txt [B, L, C]) -> updated (img, txt)."""
        return self.double_blocks[index](img, txt, inputs.vec, inputs.rope, inputs.groups, inputs.attention,
                                         *inputs.first_frame_args)

    def run_blocks_from(self, first: int, img: torch.Tensor, txt: torch.Tensor,
                        inputs: BlockInputs) -> torch.Tensor:
        """Double blocks ``first``.. then every single block; returns the image tokens [B, N, C]
        only (the final layer never reads the text tokens)."""
        n_img = img.shape[1]
        for index in range(first, len(self.double_blocks)):
            img, txt = self.run_double_block(index, img, txt, inputs)
        x_tokens = torch.cat([img, txt], dim=1)  # [B, N+L, C]
        del img, txt
        for block in self.single_blocks:
            x_tokens = block(x_tokens, inputs.vec, n_img, inputs.rope, inputs.groups, inputs.attention,
                             *inputs.first_frame_args)
        return x_tokens[:, :n_img]

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, T'H'W', pt*ph*pw*C] -> [B, C, T'pt, H'ph, W'pw] (the reference's layout)."""
        pt, ph, pw = self.config.patch_size
        t, h, w = grid
        b = tokens.shape[0]
        x = tokens.reshape(b, t, h, w, self.config.out_channels, pt, ph, pw)
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # [B, C, T', pt, H', ph, W', pw]
        return x.reshape(b, self.config.out_channels, t * pt, h * ph, w * pw)
