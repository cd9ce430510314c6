"""--attention: the transformer's kernel is chosen without narrowing PyTorch's process-wide SDPA flags (which a VAE
decoding on another thread relies on), and a backend that cannot run is refused at start, by name."""
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from pipeline.config import ConfigError
from pipeline.model.sdpa import apply_backend, canonical, preferred_kernel
from pipeline.model.random_wan import build_tiny_components


def _flags():
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(), b.cudnn_sdp_enabled())


class FlagsAtEachAttention(TorchFunctionMode):
    """Records the process-wide SDPA flags at the moment of every scaled_dot_product_attention call."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.seen.append(_flags())
        return func(*args, **(kwargs or {}))


def _forward(model):
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.in_channels, 2, 8, 8, generator=g)
    text = torch.randn(1, 8, cfg.text_dim, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([500]), text, return_dict=False)[0]


def test_the_preferred_kernel_leaves_every_kernel_enabled_for_other_threads():
    model = build_tiny_components()["transformer"]
    apply_backend(model, "math", "cpu", torch.float32)
    with preferred_kernel("_native_math"), FlagsAtEachAttention() as spy:
        ours = _forward(model)
    assert spy.seen and all(flags == (True, True, True, True) for flags in spy.seen)
    assert torch.allclose(ours, _forward(model), atol=1e-5)  # the same attention as the default choice


def test_diffusers_native_backends_narrow_the_flags_which_is_why_they_are_not_used():
    # the failure this design avoids: while the transformer runs with diffusers' _native_math, every other thread
    # (the VAE decoding) sees only the math kernel enabled; with _native_cudnn, only cuDNN (no float32 kernel)
    model = build_tiny_components()["transformer"]
    model.set_attention_backend("_native_math")
    with FlagsAtEachAttention() as spy:
        _forward(model)
    assert spy.seen and all(flags == (False, False, True, False) for flags in spy.seen)


def test_a_kernel_that_cannot_run_here_is_refused_by_name():
    model = build_tiny_components()["transformer"]
    with pytest.raises(ConfigError) as e:
        apply_backend(model, "_native_cudnn", "cpu", torch.float32)
    assert str(e.value).startswith("--attention _native_cudnn cannot run on cpu in float32")
    with pytest.raises(ConfigError) as e:
        apply_backend(model, "cudnn", "cpu", torch.float32)
    assert "_native_cudnn cannot run on cpu" in str(e.value)


def test_unknown_names_are_refused_and_aliases_resolve():
    assert canonical("") == "" and canonical("native") == ""
    assert canonical("cudnn") == "_native_cudnn" and canonical("efficient") == "_native_efficient"
    assert canonical("flash") == "flash"  # diffusers' name for the flash-attn package
    with pytest.raises(ConfigError, match="'fastest' is not an attention backend"):
        canonical("fastest")


def test_the_daemon_refuses_an_impossible_backend_at_start():
    from conftest import DaemonProc

    d = DaemonProc("--attention", "_native_cudnn", "--device", "cpu", http=False)
    rc = d.proc.wait(timeout=120)
    log = d.log()
    d.stop()
    assert rc == 2, log
    lines = [ln for ln in log.splitlines() if "--attention _native_cudnn cannot run on cpu" in ln]
    assert len(lines) == 1 and "ERROR" in lines[0], log
