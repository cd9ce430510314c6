"""The DualParal engine: block-wise denoising with a queue of blocks at consecutive steps (schedule), each tick one
window per block through the ring of ranks' layer slices (stages, ring), a feature cache for context (attention,
context, geometry) and coordinated noise (noise)."""
