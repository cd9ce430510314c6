"""Streaming block decoders, latents to frames: the model's own Wan VAE (wan_vae, made traceable by vae_trace) and
the tiny TAEHV-layout decoder (tiny_vae; tiny_graph replays it as a CUDA graph), on a shared base (block_decoder)."""
