"""A tiny, randomly initialised Wan 2.1 pipeline built entirely in code (no downloads).

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


def build_tiny_components(seed: int = 0) -> dict:
    """Return {transformer, vae, text_encoder, tokenizer, scheduler}, float32, on CPU, in eval mode."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _build_tokenizer()
    text_dim = 32
    transformer = _seeded(
        seed * 3 + 0,
        lambda: WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=16,  # RoPE splits it into t/h/w = 8/4/4
            in_channels=16,
            out_channels=16,
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
    vae = _seeded(
        seed * 3 + 1,
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
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": wan_scheduler(3.0),
    }
