"""Multi-process generation: Ulysses x Ring sequence parallelism, CFG parallelism, and a
parallel tiled VAE decode, on ``torch.distributed`` (NCCL on GPUs, gloo on CPU)."""

from hyvideo.runtime.parallel.config import ParallelConfig, ParallelError, check_degrees
from hyvideo.runtime.parallel.execution import ParallelExecution, broadcast_tensors, parallel_tiled_decode
from hyvideo.runtime.parallel.follow import LeaderPipeline, follow
from hyvideo.runtime.parallel.groups import ParallelState, init_parallel

__all__ = ["LeaderPipeline", "ParallelConfig", "ParallelError", "ParallelExecution", "ParallelState",
           "broadcast_tensors", "check_degrees", "follow", "init_parallel", "parallel_tiled_decode"]
