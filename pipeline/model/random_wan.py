"""A tiny, randomly initialised Wan pipeline built entirely in code, no downloads (`--model tiny`; the Wan 2.2
two-expert and TI2V variants for the tests of pipeline/family.py).

Same classes as the real model (WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel, a fast tokenizer,
UniPCMultistepScheduler), so every code path that runs on the real model runs here too, fast, on CPU.
Deterministic: the same seed gives bit-identical weights, independent of the global RNG state.
"""
from __future__ import annotations

import torch

TINY_TEXT_MAX_LEN = 32  # the tiny tokenizer's max sequence length (real Wan: 512)
WAN_TEXT_MAX_LEN = 512

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # UMT5's special tokens and ids (0, 1, 2)

_WORDS = """
a an the and or of in on at to from with without by over under into onto through across around behind near
is are was were be being it its this that these those there here while as for not no very slowly quickly
red orange yellow green blue purple pink white black gray grey brown gold silver dark bright light colorful
circle square triangle ball cube line dot shape shapes sphere star stars moon sun sky cloud clouds rain snow
moving moves move left right up down forward backwards walking running flying falling floating rotating
spinning jumping dancing swimming rolling bouncing growing shrinking turning static still
background foreground scene camera view close shot wide pan zoom slow motion video frame frames
cat dog bird fish horse person people man woman child car city street road forest tree trees flower flowers
water ocean sea river lake mountain mountains desert field grass fire smoke light lights night day sunset sunrise
tones overexposed blurred details subtitles style works paintings images overall worst quality low jpeg
compression residue ugly incomplete extra fingers poorly drawn hands faces deformed disfigured misshapen
limbs fused picture messy three legs many
""".split()


def _build_tokenizer():
    """Offline word-level tokenizer: known words map to one id each; unknown words fall back to characters."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    pieces = [PAD, EOS, UNK]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    punct = list(".,!?;:'\"-()[]/&%+*=_#@")
    for tok in dict.fromkeys(_WORDS + chars + punct + ["##" + c for c in chars]):
        pieces.append(tok)
    vocab = {tok: i for i, tok in enumerate(pieces)}

    tok = Tokenizer(WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=64))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    # Like T5/UMT5: append </s> to every sequence, no BOS.
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=TINY_TEXT_MAX_LEN,
        padding_side="right",
        truncation_side="right",
    )


def wan_scheduler(flow_shift: float = 3.0):
    """The scheduler Wan 2.1's diffusers pipelines ship with (UniPC, flow prediction, flow sigmas)."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=flow_shift
    )


def _seeded(seed: int, make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().eval()


TINY_FAMILIES = ("wan2.1", "wan2.2-a14b", "wan2.2-ti2v")  # what build_tiny_components builds (pipeline/family.py)
TINY_A14B_BOUNDARY = 0.875  # Wan2.2-T2V-A14B's boundary_ratio


def _tiny_transformer(seed: int, channels: int, text_dim: int):
    from diffusers import WanTransformer3DModel

    return _seeded(
        seed,
        lambda: WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=16,  # RoPE splits it into t/h/w = 8/4/4
            in_channels=channels,
            out_channels=channels,
            text_dim=text_dim,
            freq_dim=32,
            ffn_dim=64,
            num_layers=4,  # enough to split over up to 4 ranks in tests
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        ),
    )


def _tiny_vae(seed: int, family: str):
    from diffusers import AutoencoderKLWan

    if family == "wan2.2-ti2v":
        # the Wan 2.2 VAE's layout (TI2V-5B): 48 latent channels, residual up/down blocks, a 2x2 pixel patchify
        # around the codec (12 = 3 x 2 x 2 channels in and out), 16x spatial; small widths
        g = torch.Generator().manual_seed(seed + 7)  # latents_mean/std: fixed statistics, as a trained VAE has
        return _seeded(seed, lambda: AutoencoderKLWan(
            base_dim=8, decoder_base_dim=16, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
            temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
            patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
            latents_mean=(torch.randn(48, generator=g) * 0.3).tolist(),
            latents_std=(torch.rand(48, generator=g) + 0.5).tolist()))
    return _seeded(
        seed,
        lambda: AutoencoderKLWan(
            base_dim=8,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=1,
            attn_scales=[],
            temperal_downsample=[False, True, True],
            scale_factor_temporal=4,
            scale_factor_spatial=8,
        ),
    )


def build_tiny_components(seed: int = 0, family: str = "wan2.1") -> dict:
    """Return {transformer, vae, text_encoder, tokenizer, scheduler}, float32, on CPU, in eval mode. `family`
    (TINY_FAMILIES): wan2.2-a14b adds a second expert (transformer_2, other weights) and boundary_ratio;
    wan2.2-ti2v has the Wan 2.2 VAE's layout (48 channels, 16x) and expand_timesteps."""
    from transformers import UMT5Config, UMT5EncoderModel

    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose from {TINY_FAMILIES}")
    tokenizer = _build_tokenizer()
    text_dim = 32
    channels = 48 if family == "wan2.2-ti2v" else 16
    transformer = _tiny_transformer(seed * 3 + 0, channels, text_dim)
    vae = _tiny_vae(seed * 3 + 1, family)
    config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=text_dim,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=0,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        is_encoder_decoder=False,
        use_cache=False,
    )
    text_encoder = _seeded(seed * 3 + 2, lambda: UMT5EncoderModel(config))
    out = {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": wan_scheduler(3.0),
    }
    if family == "wan2.2-a14b":
        out["transformer_2"] = _tiny_transformer(seed * 3 + 1000, channels, text_dim)
        out["boundary_ratio"] = TINY_A14B_BOUNDARY
    if family == "wan2.2-ti2v":
        out["expand_timesteps"] = True
    return out
