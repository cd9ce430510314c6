"""The model, as pipeline.family describes it: its components loaded (components; shard: a rank's layer slice only),
the transformer split into prologue, blocks and epilogue (split), text encoding (text), and what changes its
weights or kernels (lora, quant, sdpa, compile); random-weight architectures for tests and benchmarks (archs,
random_wan)."""
