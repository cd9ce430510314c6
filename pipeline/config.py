"""Engine configuration: one validated dataclass shared by the CLI, the daemon and the engine ranks.

Validation lives here (pure, no torch) so that bad values fail fast with one clear line before any model
is loaded.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from common.errors import ConfigError  # noqa: F401 - the engine's configuration errors, re-exported

from .settings import DEFAULTS, OPTIONS

# Wan's VAE: 8x spatial, 4x temporal compression; transformer patch 1x2x2.
SPATIAL_FACTOR = 16  # VAE spatial factor (8) x patch (2): height and width must be multiples of this
MAX_SIDE = 4096
MAX_PROMPT_CHARS = 2000
MAX_CONTEXT_BLOCKS = 8  # --context-frames reaches back at most this many blocks

D = DEFAULTS  # the serve options' defaults (pipeline/settings.py): one definition of each


@dataclass
class EngineConfig:
    """The engine's configuration. Defaults are the serve options' (pipeline/settings.py), except that in-process
    use (tests, benchmarks) starts from the tiny model on the CPU in float32."""

    model: str = "tiny"
    height: int = D["height"]
    width: int = D["width"]
    steps: int = D["steps"]
    guidance: float = D["guidance"]
    flow_shift: float = D["flow_shift"]
    block_frames: int = D["block_frames"]
    context_frames: int = D["context_frames"]
    sink_frames: int = D["sink_frames"]
    fps: float = D["fps"]
    seed: int = D["seed"]
    prompt: str = D["prompt"]
    negative_prompt: str = D["negative_prompt"]
    dtype: str = "float32"
    device: str = "cpu"
    ranks: int = 1
    attention_backend: str = D["attention"]
    reuse_context: bool = D["reuse_context"]
    vae_dtype: str = D["vae_dtype"]
    decode_chunk: int = D["decode_chunk"]
    decode_overlap: bool = D["decode_overlap"]
    tiny_vae: str = D["tiny_vae"]
    compile: bool = D["compile"]
    lead: float = D["lead"]  # the pacer's lead in seconds; 0 = auto (pipeline.pacing.LeadEstimator)
    quant: str = D["quant"]
    lora: list = field(default_factory=list)  # 'PATH[:SCALE]' each (pipeline/lora.py)
    extra: dict = field(default_factory=dict)  # pace, split, scratch (the daemon's per-run folder)

    @classmethod
    def from_settings(cls, values: dict) -> "EngineConfig":
        """From resolved serve options (pipeline.settings.resolve)."""
        fields = {o.field or o.name: values[o.name] for o in OPTIONS if o.scope == "engine" and o.name != "pace"}
        return cls(**fields, ranks=values["ranks"], extra={"pace": values["pace"], "split": values["split"]})

    def validate(self) -> "EngineConfig":
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v % SPATIAL_FACTOR:
                raise ConfigError(f"--{name} must be a positive multiple of {SPATIAL_FACTOR}, got {v!r}")
            if v > MAX_SIDE:
                raise ConfigError(f"--{name} must be at most {MAX_SIDE}, got {v}")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise ConfigError(f"--steps must be an integer in 1..1000, got {self.steps!r}")
        if not isinstance(self.block_frames, int) or not 1 <= self.block_frames <= 64:
            raise ConfigError(f"--block-frames must be an integer in 1..64, got {self.block_frames!r}")
        if not isinstance(self.context_frames, int) or self.context_frames < 0:
            raise ConfigError(f"--context-frames must be a non-negative integer, got {self.context_frames!r}")
        if self.context_frames > MAX_CONTEXT_BLOCKS * self.block_frames:
            raise ConfigError(
                f"--context-frames ({self.context_frames}) may reach back at most {MAX_CONTEXT_BLOCKS} blocks "
                f"({MAX_CONTEXT_BLOCKS * self.block_frames} frames at --block-frames {self.block_frames})")
        if not isinstance(self.sink_frames, int) or not 0 <= self.sink_frames <= self.block_frames:
            raise ConfigError(f"--sink-frames must be an integer in 0..--block-frames ({self.block_frames}), "
                              f"got {self.sink_frames!r}")
        if self.sink_frames and not self.reuse_context:
            raise ConfigError("--sink-frames needs --reuse-context (sink frames enter as cached keys/values)")
        if not (0.0 <= float(self.guidance) <= 50.0):
            raise ConfigError(f"--guidance must be in 0..50, got {self.guidance!r}")
        if not (0.0 < float(self.fps) <= 240.0):
            raise ConfigError(f"--fps must be in (0, 240], got {self.fps!r}")
        if isinstance(self.lead, bool) or not isinstance(self.lead, (int, float)) or not 0.0 <= self.lead <= 30.0:
            raise ConfigError(f"--lead must be 0 (auto) or a number of seconds up to 30, got {self.lead!r}")
        if not (0.0 < float(self.flow_shift) <= 100.0):
            raise ConfigError(f"--flow-shift must be in (0, 100], got {self.flow_shift!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be an integer in 0..2^63-1, got {self.seed!r}")
        for name in ("dtype", "vae_dtype"):
            if getattr(self, name) not in ("auto", "float32", "bfloat16", "float16"):
                raise ConfigError(f"--{name.replace('_', '-')} must be auto, float32, bfloat16 or float16, "
                                  f"got {getattr(self, name)!r}")
        if self.quant not in ("", "fp8"):
            raise ConfigError(f"--quant must be fp8 (or left out), got {self.quant!r}")
        if not isinstance(self.decode_chunk, int) or not 0 <= self.decode_chunk <= 64:
            raise ConfigError(f"--decode-chunk must be an integer in 0..64, got {self.decode_chunk!r}")
        if not (self.device in ("auto", "cpu", "cuda") or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not isinstance(self.ranks, int) or not 1 <= self.ranks <= 64:
            raise ConfigError(f"--ranks/--gpus must be an integer in 1..64, got {self.ranks!r}")
        if not self.prompt or not self.prompt.strip():
            raise ConfigError("--prompt must not be empty")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ConfigError(f"--prompt is longer than {MAX_PROMPT_CHARS} characters")
        return self

    @property
    def use_cfg(self) -> bool:
        return float(self.guidance) > 1.0

    @property
    def latent_height(self) -> int:
        return self.height // 8

    @property
    def latent_width(self) -> int:
        return self.width // 8

    def video_frames_of_block(self, block_index: int) -> int:
        """Video frames a block decodes to: 4 per latent frame, but the stream's first latent frame gives 1."""
        n = 4 * self.block_frames
        return n - 3 if block_index == 0 else n

    def resolved(self, local_rank: int = 0) -> "EngineConfig":
        """A copy with device/dtype made concrete for the rank with this LOCAL_RANK (imports torch):
        see `pipeline.devices.resolve_device`."""
        import torch

        from .devices import resolve_device, resolve_dtype

        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        device = resolve_device(self.device, cuda_count=cuda_count, local_rank=local_rank, world=self.ranks)
        return dataclasses.replace(self, device=device, dtype=resolve_dtype(self.dtype, device),
                                   vae_dtype=resolve_dtype(self.vae_dtype, device),
                                   decode_chunk=self.decode_chunk or (1 if device == "cpu" else self.block_frames))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "EngineConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
