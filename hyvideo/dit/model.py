"""HYVideoDiffusionTransformer: the HunyuanVideo MMDiT (dual-stream then single-stream blocks)."""

from __future__ import annotations

import torch
from torch import nn

from hyvideo.dit.config import DiTConfig
from hyvideo.dit.attention import AttentionGroups, check_backend
from hyvideo.dit.blocks import MMDoubleStreamBlock, MMSingleStreamBlock
from hyvideo.dit.layers import FinalLayer, MLPEmbedder, PatchEmbed, TextProjection, TimestepEmbedder
from hyvideo.dit.rope import rope_tables
from hyvideo.dit.token_refiner import SingleTokenRefiner


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
        if c.text_projection == "single_refiner":
            self.txt_in = SingleTokenRefiner(c.text_states_dim, h, c.heads_num, c.token_refiner_depth,
                                             c.mlp_width_ratio, c.qkv_bias, **kw)
        else:
            self.txt_in = TextProjection(c.text_states_dim, h, **kw)
        self.time_in = TimestepEmbedder(h, **kw)
        self.vector_in = MLPEmbedder(c.text_states_dim_2, h, **kw)
        self.guidance_in = TimestepEmbedder(h, **kw) if c.guidance_embed else None
        self.double_blocks = nn.ModuleList(
            MMDoubleStreamBlock(h, c.heads_num, c.mlp_hidden_dim, c.qkv_bias, c.qk_norm, **kw)
            for _ in range(c.mm_double_blocks_depth)
        )
        self.single_blocks = nn.ModuleList(
            MMSingleStreamBlock(h, c.heads_num, c.mlp_hidden_dim, c.qk_norm, **kw)
            for _ in range(c.mm_single_blocks_depth)
        )
        self.final_layer = FinalLayer(h, c.patch_size, c.out_channels, **kw)
        self.token_split = None  # set by set_parallel for sequence parallelism

    def set_parallel(self, token_split, attention_backend) -> None:
        """Sequence parallelism (see hyvideo.runtime.parallel): ``token_split.scatter`` keeps this rank's
        image tokens and RoPE rows after patch embedding, ``token_split.gather`` collects the
        final tokens, and the callable ``attention_backend`` attends across ranks."""
        self.token_split = token_split
        self.attention_backend = attention_backend

    @property
    def dtype(self) -> torch.dtype:
        return self.img_in.proj.weight.dtype

    def token_grid(self, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
        """Latent (T, H, W) -> token grid (T', H', W')."""
        pt, ph, pw = self.config.patch_size
        t, h, w = latent_thw
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent size {latent_thw} is not divisible by patch {self.config.patch_size}")
        return t // pt, h // ph, w // pw

    def rope(self, latent_thw: tuple[int, int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) tables [N, head_dim] for a latent of size (T, H, W)."""
        return rope_tables(self.token_grid(latent_thw), self.config.rope_dim_list,
                           self.config.rope_theta, device=device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_states: torch.Tensor,
                text_mask: torch.Tensor | None, text_states_2: torch.Tensor,
                guidance: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Predict the flow for latent ``x``.

        Args:
            x: [B, C, T, H, W] latents.
            t: [B] timesteps on the 0..1000 scale (sigma * 1000).
            text_states: [B, L, text_states_dim] LLM states; padded rows never matter.
            text_mask: [B, L] int/bool, 1 = valid, padding at the end.
            text_states_2: [B, text_states_dim_2] pooled CLIP vector.
            guidance: [B] embedded guidance * 1000 (guidance-distilled models only).
            rope: optional precomputed (cos, sin); by default built from x's shape.
        Returns:
            [B, out_channels, T, H, W]
        """
        c = self.config
        grid = self.token_grid(tuple(x.shape[2:]))
        rope = rope if rope is not None else self.rope(tuple(x.shape[2:]), device=x.device)
        dtype = self.dtype

        vec = self.time_in(t) + self.vector_in(text_states_2.to(dtype))  # [B, C]
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this model embeds guidance: pass guidance (embedded_cfg_scale*1000)")
            vec = vec + self.guidance_in(guidance)
        img = self.img_in(x.to(dtype))  # [B, N, C]
        if self.token_split is not None:  # this rank's chunk: [B, N/P, C] and its RoPE rows
            img, rope = self.token_split.scatter(img, rope)
        if c.text_projection == "single_refiner":
            refiner_mask = text_mask if c.use_attention_mask else None
            txt = self.txt_in(text_states.to(dtype), t, refiner_mask, self.attention_backend)
        else:
            txt = self.txt_in(text_states.to(dtype))
        mask = text_mask if c.use_attention_mask else None
        if mask is not None:
            # Padding tokens form their own attention group in every block and the final layer
            # reads image tokens only, so padding past the longest prompt cannot change the
            # output: drop it. With one prompt length per batch no mask is left at all.
            longest = int(mask.sum(dim=1).max())
            if longest < txt.shape[1]:  # a fresh tensor with standard strides, even for batch 1
                # (compiled blocks guard on strides; a size-1 batch slice keeps the old ones)
                txt = txt[:, :longest].clone(memory_format=torch.contiguous_format)
                mask = mask[:, :longest]
        groups = AttentionGroups.from_text_mask(img.shape[1], mask, txt.shape[1])

        img = self.run_blocks(img, txt, vec, rope, groups)
        out = self.final_layer(img, vec)  # [B, N, pt*ph*pw*C_out]
        if self.token_split is not None:
            out = self.token_split.gather(out)  # the one gather per forward
        return self.unpatchify(out, grid)

    # A step cache (hyvideo.runtime.cache) that may replace the block loop on some denoising steps.
    step_cache = None

    def set_step_cache(self, cache) -> None:
        """Attach a :class:`hyvideo.runtime.cache.StepCache` (None detaches it)."""
        self.step_cache = cache

    def run_blocks(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, rope,
                   groups: AttentionGroups) -> torch.Tensor:
        """Every double then single block; returns the image tokens [B, N, C] only (the final
        layer never reads the text tokens). With a step cache attached, the cache decides
        whether the blocks run (it calls the two methods below)."""
        if self.step_cache is not None:
            return self.step_cache.run(self, img, txt, vec, rope, groups)
        return self.run_blocks_from(0, img, txt, vec, rope, groups)

    def run_double_block(self, index: int, img: torch.Tensor, txt: torch.Tensor,
                         vec: torch.Tensor, rope, groups: AttentionGroups):
        """Double block ``index`` alone: (img [B, N, C], txt [B, L, C]) -> updated (img, txt)."""
        return self.double_blocks[index](img, txt, vec, rope, groups, self.attention_backend)

    def run_blocks_from(self, first: int, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor,
                        rope, groups: AttentionGroups) -> torch.Tensor:
        """Double blocks ``first``.. then every single block; returns the image tokens [B, N, C]."""
        n_img = img.shape[1]
        for index in range(first, len(self.double_blocks)):
            img, txt = self.run_double_block(index, img, txt, vec, rope, groups)
        x_tokens = torch.cat([img, txt], dim=1)  # [B, N+L, C]
        del img, txt
        for block in self.single_blocks:
            x_tokens = block(x_tokens, vec, n_img, rope, groups, self.attention_backend)
        return x_tokens[:, :n_img]

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, T'H'W', pt*ph*pw*C] -> [B, C, T'pt, H'ph, W'pw] (the reference's layout)."""
        pt, ph, pw = self.config.patch_size
        t, h, w = grid
        b = tokens.shape[0]
        x = tokens.reshape(b, t, h, w, self.config.out_channels, pt, ph, pw)
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # [B, C, T', pt, H', ph, W', pw]
        return x.reshape(b, self.config.out_channels, t * pt, h * ph, w * pw)
