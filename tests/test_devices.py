"""--device resolution (pure, no GPU needed): auto, cuda, cuda:N and cpu for one or several ranks."""
import pytest

from pipeline.config import ConfigError
from pipeline.devices import resolve_device, resolve_dtype


@pytest.mark.parametrize("spec, cuda, local, world, want", [
    ("auto", 0, 0, 1, "cpu"),
    ("auto", 0, 2, 4, "cpu"),  # CPU ranks (gloo)
    ("auto", 1, 0, 1, "cuda:0"),  # the default on a GPU host: an indexed device, never bare "cuda"
    ("auto", 4, 3, 4, "cuda:3"),  # rank r takes GPU LOCAL_RANK
    ("cuda", 1, 0, 1, "cuda:0"),  # "cuda" means the same as auto on a GPU host
    ("cuda", 8, 5, 8, "cuda:5"),
    ("cuda:1", 2, 0, 1, "cuda:1"),
    ("cpu", 8, 0, 1, "cpu"),
    ("", 1, 0, 1, "cuda:0"),
])
def test_resolves_to_a_concrete_device(spec, cuda, local, world, want):
    assert resolve_device(spec, cuda_count=cuda, local_rank=local, world=world) == want


@pytest.mark.parametrize("spec, cuda, local, world, needle", [
    ("cuda", 0, 0, 1, "no CUDA device is visible"),
    ("cuda:0", 0, 0, 1, "only 0 CUDA device(s)"),
    ("cuda:2", 2, 0, 1, "only 2 CUDA device(s)"),
    ("cuda:0", 4, 1, 2, "use --device cuda"),  # one named GPU cannot serve two ranks
    ("auto", 2, 2, 4, "needs GPU 2, but only 2"),
    ("cuda:x", 1, 0, 1, "auto, cpu, cuda or cuda:N"),
    ("tpu", 1, 0, 1, "auto, cpu, cuda or cuda:N"),
])
def test_impossible_devices_are_refused_with_one_clear_line(spec, cuda, local, world, needle):
    with pytest.raises(ConfigError) as e:
        resolve_device(spec, cuda_count=cuda, local_rank=local, world=world)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_dtype_auto_follows_the_device():
    assert resolve_dtype("auto", "cuda:0") == "bfloat16"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("float16", "cpu") == "float16"


def test_engine_config_resolves_through_the_same_function():
    from pipeline.config import EngineConfig

    cfg = EngineConfig(device="auto", dtype="auto").resolved(local_rank=0)
    import torch

    expect = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert (cfg.device, cfg.dtype) == (expect, "float32" if expect == "cpu" else "bfloat16")


def test_the_realtime_preset_sits_between_model_defaults_and_explicit_options(tmp_path):
    from streamer.cli import build_parser, resolve_serve

    def cfg(*argv):
        return resolve_serve(build_parser().parse_args(["serve", "--model", "tiny", *argv]))[0]
    rt = cfg("--preset", "realtime")
    got = (rt.steps, rt.guidance, rt.flow_shift, rt.reuse_context, rt.compile, rt.fps)
    assert got == (4, 1.0, 5.0, False, True, 16.0)
    assert (rt.block_frames, rt.context_frames) == (2, 1)
    assert cfg("--preset", "realtime", "--reuse-context").reuse_context is True
    assert cfg("--preset", "realtime", "--steps", "6").steps == 6  # the command line wins
    toml = tmp_path / "s.toml"
    toml.write_text('preset = "realtime"\nguidance = 2.0\n')
    from_file = cfg("--config", str(toml))
    assert (from_file.steps, from_file.guidance) == (4, 2.0)  # the file's own keys win over its preset
    low = cfg("--preset", "lowlatency")  # the same recipe with blocks of one latent frame
    assert (low.steps, low.guidance, low.flow_shift, low.reuse_context, low.compile, low.fps) == got
    assert (low.block_frames, low.context_frames) == (1, 1)
    assert cfg().reuse_context is False
    with pytest.raises(ConfigError, match="--preset must be one of lowlatency, realtime"):
        cfg("--preset", "fastest")
