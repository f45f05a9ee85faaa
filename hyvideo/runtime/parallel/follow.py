"""The web demo under torchrun: rank 0 serves, the other ranks follow its requests in step.

Between requests the followers wait for rank 0's next message for as long as the page stays idle
-- hours or days. They wait in a gloo group of their own (:func:`control_group`) with a timeout of
:data:`IDLE_TIMEOUT`, not in the default group: on GPUs that is NCCL, whose collectives abort the
job after the process group's timeout (10 minutes). The request and the per-step go/stop flag
travel in that group too (CPU tensors); the model's own collectives keep the default group.
"""

from __future__ import annotations

import datetime
import logging

import torch
import torch.distributed as dist

from hyvideo.pipeline.types import GenerationCancelled, UsageError
from hyvideo.runtime.parallel.config import ParallelError, check_degrees
from hyvideo.runtime.parallel.groups import ParallelState

log = logging.getLogger(__name__)

IDLE_TIMEOUT = datetime.timedelta(days=365)  # how long a follower waits for the next request


def control_group(timeout: datetime.timedelta = IDLE_TIMEOUT):
    """A gloo group of every rank for the demo's control messages. Collective: each rank calls
    it once, at the same point (rank 0 in :class:`LeaderPipeline`, the others in :func:`follow`)."""
    return dist.new_group(backend="gloo", timeout=timeout)


class LeaderPipeline:
    """Rank 0's pipeline when the other ranks follow it (the web demo under torchrun).

    Each call first sends the request to the followers; at every denoising step rank 0
    broadcasts whether to go on, so a cancel stops every rank at the same step. Attributes are
    the wrapped pipeline's.
    """

    def __init__(self, pipe, state: ParallelState, group=None):
        self.pipe, self.state = pipe, state
        self.group = group if group is not None else control_group()

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)

    def __call__(self, request, *, callback=None, decode: bool = True, show_progress: bool = False):
        try:  # a size the degrees cannot split is the visitor's input error, not a crash
            check_degrees(self.state.config, world_size=self.state.world_size,
                          geometry=self.pipe.geometry, video_length=request.video_length,
                          height=request.height, width=request.width)
        except ParallelError as exc:
            raise UsageError(str(exc)) from None
        dist.broadcast_object_list([(request, decode)], src=0, group=self.group)
        return self.pipe(request, callback=_StepSync(self.group, callback),
                         decode=decode, show_progress=show_progress)

    def close(self) -> None:
        """Release the followers (they return from :func:`follow`)."""
        dist.broadcast_object_list([None], src=0, group=self.group)


class _StepSync:
    """Progress callback that agrees with every rank, at each denoising step, whether to stop.

    On rank 0 it runs the page's callback; a cancel raised there (at any stage) is held until
    the next denoising step, where it is broadcast and then raised on every rank.
    """

    def __init__(self, group, callback=None):
        self.group, self.callback, self.pending = group, callback, None

    def __call__(self, event) -> None:
        if self.callback is not None:
            try:
                self.callback(event)
            except GenerationCancelled as exc:
                self.pending = exc
        if event.stage != "denoise":
            return
        flag = torch.tensor([1 if self.pending is not None else 0])  # CPU: the gloo control group
        dist.broadcast(flag, src=0, group=self.group)
        if flag.item():
            raise self.pending or GenerationCancelled("cancelled by rank 0")


def follow(pipe, group=None) -> None:
    """Ranks > 0: run every request rank 0 sends, in step with it, until it closes."""
    group = group if group is not None else control_group()
    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0, group=group)  # idle here between requests
        if box[0] is None:
            return
        request, decode = box[0]
        try:
            pipe(request, callback=_StepSync(group), decode=decode, show_progress=False)
        except GenerationCancelled:
            log.info("rank %d: generation cancelled by rank 0", dist.get_rank())
