"""The web demo under torchrun: rank 0 serves, the other ranks follow its requests in step."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from hyvideo.pipeline.types import GenerationCancelled, UsageError
from hyvideo.runtime.parallel.config import ParallelError, check_degrees
from hyvideo.runtime.parallel.groups import ParallelState

log = logging.getLogger(__name__)


class LeaderPipeline:
    """Rank 0's pipeline when the other ranks follow it (the web demo under torchrun).

    Each call first sends the request to the followers; at every denoising step rank 0
    broadcasts whether to go on, so a cancel stops every rank at the same step. Attributes are
    the wrapped pipeline's.
    """

    def __init__(self, pipe, state: ParallelState):
        self.pipe, self.state = pipe, state

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)

    def __call__(self, request, *, callback=None, decode: bool = True, show_progress: bool = False):
        try:  # a size the degrees cannot split is the visitor's input error, not a crash
            check_degrees(self.state.config, world_size=self.state.world_size,
                          geometry=self.pipe.geometry, video_length=request.video_length,
                          height=request.height, width=request.width)
        except ParallelError as exc:
            raise UsageError(str(exc)) from None
        dist.broadcast_object_list([(request, decode)], src=0)
        return self.pipe(request, callback=_StepSync(self.pipe.device, callback),
                         decode=decode, show_progress=show_progress)

    def close(self) -> None:
        """Release the followers (they return from :func:`follow`)."""
        dist.broadcast_object_list([None], src=0)


class _StepSync:
    """Progress callback that agrees with every rank, at each denoising step, whether to stop.

    On rank 0 it runs the page's callback; a cancel raised there (at any stage) is held until
    the next denoising step, where it is broadcast and then raised on every rank.
    """

    def __init__(self, device: torch.device, callback=None):
        self.device, self.callback, self.pending = device, callback, None

    def __call__(self, event) -> None:
        if self.callback is not None:
            try:
                self.callback(event)
            except GenerationCancelled as exc:
                self.pending = exc
        if event.stage != "denoise":
            return
        flag = torch.tensor([1 if self.pending is not None else 0], device=self.device)
        dist.broadcast(flag, src=0)
        if flag.item():
            raise self.pending or GenerationCancelled("cancelled by rank 0")


def follow(pipe) -> None:
    """Ranks > 0: run every request rank 0 sends, in step with it, until it closes."""
    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is None:
            return
        request, decode = box[0]
        try:
            pipe(request, callback=_StepSync(pipe.device), decode=decode, show_progress=False)
        except GenerationCancelled:
            log.info("rank %d: generation cancelled by rank 0", dist.get_rank())
