"""The causal engine: few-step causal distillations of Wan (Self-Forcing, CausVid, LongLive, Krea) served block by
block with a key/value cache (pipeline/causal/engine.py). The recipe (schedule.py), the rolling cache (cache.py),
the attention that reads it (attention.py) and the checkpoint conversion (convert.py) are separate modules."""
