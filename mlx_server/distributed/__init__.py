"""One model across several processes with MLX distributed (`mlx.launch`).

Every rank loads its shard with mlx-lm's `sharded_load` (tensor or pipeline parallel)
and runs the same `EngineCore` in lockstep: rank 0 serves HTTP and, before each engine
step, broadcasts that step's inputs (new requests, aborts, timeouts) to the others, so
every rank makes the same scheduling decisions and the same batched forward passes.
"""
