"""Runtime options that wrap a model or serve the pipeline: offload, caches, compile, parallelism."""
