"""Step caches: skip the DiT's transformer blocks on denoising steps whose input barely changed.

Two published schemes, chosen by :class:`CacheConfig` and built by :func:`make_step_cache`. The
denoising loop passes the cache to each DiT call (``step_cache=``), and the DiT hands its block
loop to the cache's ``run``:

* ``teacache`` -- "Timestep Embedding Tells: It's Time to Cache" (TeaCache, as released for
  HunyuanVideo). Each step computes the first double block's modulated image input
  ``modulate(layer_norm(img), shift, scale)``; its relative L1 change since the previous step,
  rescaled by the published HunyuanVideo polynomial, is accumulated. While the sum stays below
  the threshold the blocks are skipped and ``img + residual`` (the last computed step's block
  output minus block input) is returned; otherwise the blocks run and the sum restarts at 0.
* ``first-block`` -- ParaAttention's First Block Cache. ``double_blocks[0]`` always runs; when
  its image residual differs from the one of the last computed step by less than the threshold
  (mean |difference| / mean |previous|), the other blocks are skipped and their cached residual
  is added to the first block's output.

The denoising loop (:func:`hyvideo.pipeline.denoise.denoise`) resets the cache at the start of every
generation and tells it each step's index, so the first and last steps always run and two
generations in one process are independent. A threshold of 0 never skips: the result is bit for
bit the uncached one. Under sequence parallelism (the blocks' ``token_groups``) and CFG parallelism the
distance's numerator and denominator are summed over the rank groups first, so every rank takes
the same decision -- the one a single process would take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist


MODES = ("none", "teacache", "first-block")

# Thresholds the authors suggest for HunyuanVideo: TeaCache lists 0.1 (~1.6x) and 0.15 (~2.1x);
# ParaAttention's default residual difference for HunyuanVideo is 0.06.
DEFAULT_THRESHOLDS = {"none": 0.0, "teacache": 0.15, "first-block": 0.06}

# TeaCache's rescaling of the raw relative L1 distance for HunyuanVideo (np.poly1d order:
# highest power first), fitted by its authors on the released model.
TEACACHE_HUNYUAN_COEFFICIENTS = (7.33226126e+02, -4.01131952e+02, 6.75869174e+01,
                                 -3.14987800e+00, 9.61237896e-02)


@dataclass(frozen=True)
class CacheConfig:
    """Which step cache to use. ``threshold=None`` takes the mode's suggested value."""

    mode: str = "none"
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown cache mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.threshold is None:
            object.__setattr__(self, "threshold", DEFAULT_THRESHOLDS[self.mode])
        threshold = float(self.threshold)
        if not threshold >= 0 or threshold == float("inf"):  # also rejects NaN
            raise ValueError(f"cache threshold must be a finite number >= 0 (0 = never skip), "
                             f"got {self.threshold}")
        object.__setattr__(self, "threshold", threshold)

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


@dataclass
class CacheStats:
    """What the cache did in the current (or last) generation."""

    computed: int = 0
    skipped: int = 0
    decisions: list[bool] = field(default_factory=list)  # per step: True = blocks ran
    distances: list[float | None] = field(default_factory=list)  # None: step forced to run

    @property
    def skipped_steps(self) -> list[int]:
        return [k for k, ran in enumerate(self.decisions) if not ran]

    def summary(self) -> str:
        total = self.computed + self.skipped
        return f"{self.computed} of {total} steps computed, {self.skipped} skipped"


def rescale_teacache(distance: float, coefficients=TEACACHE_HUNYUAN_COEFFICIENTS) -> float:
    """The published polynomial at ``distance`` (Horner's rule; np.poly1d's order)."""
    value = 0.0
    for c in coefficients:
        value = value * distance + c
    return value


class StepCache:
    """State shared by both caches: the step clock, the cached residual, counters, reductions.

    Use: ``begin(steps)`` once per generation, ``start_step(k)`` before the DiT call of step k,
    ``end()`` afterwards (frees the cached tensors, keeps the counters in ``stats``).
    """

    mode = "none"

    def __init__(self, config: CacheConfig, groups: tuple = ()):
        if config.mode != self.mode:
            raise ValueError(f"{type(self).__name__} needs cache mode {self.mode!r}, got {config.mode!r}")
        self.config = config
        self.steps: int | None = None
        self.step = 0
        self.stats = CacheStats()
        self._calls = 0
        # CFG-parallel groups: each of their ranks holds part of the batch, so decisions are
        # summed over them (harmless when a batch is not split: equal sums, equal ratio).
        self._groups = tuple(groups)
        self._residual: torch.Tensor | None = None

    @property
    def threshold(self) -> float:
        return self.config.threshold

    def begin(self, steps: int) -> None:
        """Reset for a new generation of ``steps`` steps."""
        if steps < 1:
            raise ValueError(f"a step cache needs at least one step, got {steps}")
        self.end()
        self.steps, self.step, self._calls = steps, 0, 0
        self.stats = CacheStats()

    def start_step(self, step: int) -> None:
        if self.steps is None or not 0 <= step < self.steps:
            raise RuntimeError(f"step cache: step {step} is outside the generation "
                               f"({self.steps} steps); call begin(steps) first")
        self.step, self._calls = step, 0

    def metadata(self) -> dict:
        """The settings and what the last generation skipped, for the output's metadata."""
        return {"mode": self.config.mode, "threshold": self.config.threshold,
                "skipped_steps": self.stats.skipped_steps}

    def end(self) -> None:
        """Drop the cached tensors (they are as large as the image tokens); keep ``stats``."""
        self._residual = None
        self.steps = None

    def run(self, dit, img: torch.Tensor, txt: torch.Tensor, inputs) -> torch.Tensor:
        """The DiT's blocks, or their cached effect: image tokens [B, N, C] -> [B, N, C]."""
        raise NotImplementedError

    # -- shared pieces ------------------------------------------------------------------------

    def _enter(self) -> int:
        if self.steps is None:
            raise RuntimeError("the DiT has a step cache but no generation was started: call it "
                               "through hyvideo.pipeline.denoise.denoise, or call cache.begin(steps) and "
                               "cache.start_step(k) yourself")
        self._calls += 1
        if self._calls > 1:
            raise RuntimeError(f"step cache: the DiT was called twice in step {self.step}; it "
                               "expects one call per step (put the CFG branches in one batch)")
        return self.step

    def _forced(self, img: torch.Tensor) -> bool:
        """First and last steps always run, and so does any step without a usable residual
        (none yet, or one of another batch/latent shape, dtype or device)."""
        r = self._residual
        stale = r is None or r.shape != img.shape or r.dtype != img.dtype or r.device != img.device
        return stale or self.step == 0 or self.step == self.steps - 1

    def _relative_l1(self, inputs, current: torch.Tensor, previous: torch.Tensor) -> float:
        """mean |current - previous| / mean |previous| over the whole batch and all tokens,
        summed over the sequence- and CFG-parallel groups (equal chunks on every rank, so the
        ratio of sums is the ratio of means). Sums in float32."""
        sums = torch.stack([(current - previous).abs().sum(dtype=torch.float32),
                            previous.abs().sum(dtype=torch.float32)])
        for group in [*inputs.token_groups, *self._groups]:
            dist.all_reduce(sums, group=group)
        num, den = sums.tolist()
        return num / den if den > 0 else float("inf")

    def _skips(self, distance: float) -> bool:
        # threshold 0 never skips, even if the rescaled TeaCache distance went negative
        return self.threshold > 0 and distance < self.threshold

    def _record(self, ran: bool, distance: float | None) -> None:
        self.stats.decisions.append(ran)
        self.stats.distances.append(distance)
        if ran:
            self.stats.computed += 1
        else:
            self.stats.skipped += 1


class TeaCache(StepCache):
    """TeaCache for HunyuanVideo (see the module docstring)."""

    mode = "teacache"

    def __init__(self, config: CacheConfig, groups: tuple = (), coefficients=TEACACHE_HUNYUAN_COEFFICIENTS):
        super().__init__(config, groups)
        self.coefficients = tuple(coefficients)
        self._previous_input: torch.Tensor | None = None
        self._accumulated = 0.0

    def begin(self, steps: int) -> None:
        super().begin(steps)
        self._accumulated = 0.0

    def end(self) -> None:
        super().end()
        self._previous_input = None

    def run(self, dit, img, txt, inputs) -> torch.Tensor:
        self._enter()
        # [B, N, C] block 0's modulated input (token_replace: frame 0 with its own vector)
        modulated = dit.double_blocks[0].modulated_img(img, inputs.vec, *inputs.first_frame_args)
        previous, self._previous_input = self._previous_input, modulated
        distance = None
        if self._forced(img) or previous is None or previous.shape != modulated.shape:
            self._accumulated = 0.0
        else:
            raw = self._relative_l1(inputs, modulated, previous)
            self._accumulated += rescale_teacache(raw, self.coefficients)
            distance = self._accumulated
            if self._skips(self._accumulated):
                self._record(False, distance)
                return img + self._residual
            self._accumulated = 0.0
        out = dit.run_blocks_from(0, img, txt, inputs)  # [B, N, C]
        self._residual = (out - img).detach()
        self._record(True, distance)
        return out


class FirstBlockCache(StepCache):
    """ParaAttention's First Block Cache (see the module docstring)."""

    mode = "first-block"

    def __init__(self, config: CacheConfig, groups: tuple = ()):
        super().__init__(config, groups)
        self._first_residual: torch.Tensor | None = None

    def end(self) -> None:
        super().end()
        self._first_residual = None

    def run(self, dit, img, txt, inputs) -> torch.Tensor:
        self._enter()
        first, txt = dit.run_double_block(0, img, txt, inputs)  # [B, N, C], [B, L, C]
        first_residual = (first - img).detach()
        del img
        previous = self._first_residual
        distance = None
        if not self._forced(first) and previous is not None and previous.shape == first_residual.shape:
            # compared with the last *computed* step's residual, as ParaAttention does
            distance = self._relative_l1(inputs, first_residual, previous)
            if self._skips(distance):
                self._record(False, distance)
                return first + self._residual
        self._first_residual = first_residual
        out = dit.run_blocks_from(1, first, txt, inputs)  # [B, N, C]
        self._residual = (out - first).detach()
        self._record(True, distance)
        return out


def make_step_cache(config: CacheConfig, groups: tuple = ()) -> StepCache | None:
    """The cache for ``config`` (None for mode ``none``); ``groups``: the CFG-parallel process
    groups whose ranks share a batch."""
    caches = {"teacache": TeaCache, "first-block": FirstBlockCache}
    return caches[config.mode](config, groups) if config.enabled else None
