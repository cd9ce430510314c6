"""Engine configuration: one validated dataclass shared by the CLI, the daemon and the engine ranks.

Validation lives here (pure, no torch) so that bad values fail fast with one clear line before any model
is loaded.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from common.errors import ConfigError  # noqa: F401 - the engine's configuration errors, re-exported

from .family import Family, describe, parse_target
from .settings import DEFAULTS, OPTION, OPTIONS

MAX_SIDE = 4096
MAX_PROMPT_CHARS = 2000
MAX_CONTEXT_BLOCKS = 8  # --context-frames reaches back at most this many blocks
MAX_STREAM_ROWS = 8  # --stream-batch: steps (= rows of its batch; pipeline.dualparal.stages.MAX_ROWS)

D = DEFAULTS  # the serve options' defaults (pipeline/settings.py): one definition of each


@dataclass
class EngineConfig:
    """The engine's configuration. Defaults are the serve options' (pipeline/settings.py), except that in-process
    use (tests, benchmarks) starts from the tiny model on the CPU in float32."""

    model: str = "tiny"
    engine: str = D["engine"]  # dualparal | causal (pipeline/causal/)
    stream_batch: bool = D["stream_batch"]  # the causal engine: a batched forward of blocks at every step
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
    lora: list = field(default_factory=list)  # 'PATH[:SCALE][@high|@low]' each (pipeline/model/lora.py)
    guidance_2: float = D["guidance_2"]  # two-expert models: the low-noise expert's guidance; 0 = folder's/--guidance
    boundary_ratio: float = D["boundary_ratio"]  # two-expert models: where the low-noise expert starts; -1 = folder's
    family: dict = field(default_factory=dict)  # the model family's facts (pipeline.family.Family), set by validate()
    extra: dict = field(default_factory=dict)  # pace, split, scratch (the daemon's per-run folder)

    @classmethod
    def from_settings(cls, values: dict) -> "EngineConfig":
        """From resolved serve options (pipeline.resolve.resolve)."""
        fields = {o.field or o.name: values[o.name] for o in OPTIONS if o.scope == "engine" and o.name != "pace"}
        return cls(**fields, ranks=values["ranks"], extra={"pace": values["pace"], "split": values["split"]})

    def _validate_causal(self) -> None:
        """What the causal engine (pipeline/causal/) serves: one expert, no CFG."""
        if float(self.guidance) > 1.0:
            raise ConfigError(f"the causal engine runs without classifier-free guidance (--guidance 1), got "
                              f"--guidance {self.guidance}")
        if self.model_family().name != "wan2.1":
            raise ConfigError(f"the causal engine serves causal Wan 2.1 checkpoints; {self.model!r} is a "
                              f"{self.model_family().name} model")
        if self.quant or self.reuse_context:
            raise ConfigError(f"{'--quant' if self.quant else '--reuse-context'} is for the DualParal engine")
        if self.stream_batch and self.steps > MAX_STREAM_ROWS:
            raise ConfigError(f"--stream-batch denoises one block per step at once: at most {MAX_STREAM_ROWS} "
                              f"steps, got --steps {self.steps}")

    def model_family(self):
        """The model's family (pipeline.family): read from the folder once, then carried in `family` (to the ranks,
        which may run where the folder is not yet)."""
        if not self.family:
            self.family = describe(self.model).to_dict()
        cached = self.__dict__.get("_family")
        if cached is None or cached[0] is not self.family:
            cached = (self.family, Family.from_dict(self.family))
            self.__dict__["_family"] = cached
        return cached[1]

    def validate(self) -> "EngineConfig":
        fam = self.model_family()
        multiple = fam.size_multiple
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v % multiple:
                raise ConfigError(f"--{name} must be a positive multiple of {multiple}"
                                  f"{'' if fam.name == 'wan2.1' else f' for a {fam.name} model'}, got {v!r}")
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
        causal = self.engine == "causal"
        if self.stream_batch and not causal:
            raise ConfigError("--stream-batch is for the causal engine (--engine causal)")
        if not isinstance(self.sink_frames, int) or not 0 <= self.sink_frames <= self.block_frames:
            raise ConfigError(f"--sink-frames must be an integer in 0..--block-frames ({self.block_frames}), "
                              f"got {self.sink_frames!r}")
        if self.sink_frames and not (self.reuse_context or causal):
            raise ConfigError("--sink-frames needs --reuse-context (sink frames enter as cached keys/values)")
        if causal:
            self._validate_causal()
        if not (0.0 <= float(self.guidance) <= 50.0):
            raise ConfigError(f"--guidance must be in 0..50, got {self.guidance!r}")
        if isinstance(self.guidance_2, bool) or not (0.0 <= float(self.guidance_2) <= 50.0):
            raise ConfigError(f"--guidance-2 must be in 0..50 (0: the model folder's, else --guidance), "
                              f"got {self.guidance_2!r}")
        if not (self.boundary_ratio == -1 or 0.0 <= float(self.boundary_ratio) <= 1.0):
            raise ConfigError(f"--boundary-ratio must be in 0..1 (or -1: the model folder's), "
                              f"got {self.boundary_ratio!r}")
        if len(fam.experts) < 2 and (self.guidance_2 or self.boundary_ratio != -1):
            flag = "--guidance-2" if self.guidance_2 else "--boundary-ratio"
            raise ConfigError(f"{flag} is for models with two experts (Wan 2.2 A14B); {self.model!r} has one")
        if len(fam.experts) < 2:
            for spec in self.lora:
                target = parse_target(spec)[1]
                if target:
                    raise ConfigError(f"--lora {spec!r}: @{target} names an expert, but {self.model!r} has one "
                                      "transformer (@high / @low are for two-expert models: Wan 2.2 A14B)")
        if not (0.0 < float(self.fps) <= 240.0):
            raise ConfigError(f"--fps must be in (0, 240], got {self.fps!r}")
        if isinstance(self.lead, bool) or not isinstance(self.lead, (int, float)) or not 0.0 <= self.lead <= 30.0:
            raise ConfigError(f"--lead must be 0 (auto) or a number of seconds up to 30, got {self.lead!r}")
        if not (0.0 < float(self.flow_shift) <= 100.0):
            raise ConfigError(f"--flow-shift must be in (0, 100], got {self.flow_shift!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be an integer in 0..2^63-1, got {self.seed!r}")
        for name in ("dtype", "vae_dtype", "quant", "engine"):  # the choices the options tree lists
            choices = OPTION[name].choices
            if getattr(self, name) not in choices:
                shown = ", ".join(c for c in choices if c) + (" (or left out)" if "" in choices else "")
                raise ConfigError(f"--{name.replace('_', '-')} must be one of {shown}, got {getattr(self, name)!r}")
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
        return max(self.guidance_scales()) > 1.0

    def guidance_scales(self) -> tuple[float, ...]:
        """The guidance scale of each expert: --guidance, and for a second expert --guidance-2, else the folder's,
        else --guidance (diffusers' WanPipeline defaults)."""
        fam = self.model_family()
        if len(fam.experts) < 2:
            return (float(self.guidance),)
        g2 = float(self.guidance_2) or (fam.guidance_2 if fam.guidance_2 is not None else float(self.guidance))
        return float(self.guidance), g2

    def boundary_timestep(self, num_train_timesteps: int) -> float | None:
        """Timesteps below this are the second expert's (None: one expert for every step)."""
        fam = self.model_family()
        if len(fam.experts) < 2:
            return None
        ratio = fam.boundary_ratio if self.boundary_ratio == -1 else float(self.boundary_ratio)
        return None if ratio is None else ratio * num_train_timesteps

    @property
    def latent_height(self) -> int:
        return self.height // self.model_family().vae_spatial

    @property
    def latent_width(self) -> int:
        return self.width // self.model_family().vae_spatial

    def video_frames_of_block(self, block_index: int) -> int:
        """Video frames a block decodes to: 4 per latent frame (the VAE's temporal factor), but the stream's first
        latent frame gives 1."""
        n = self.model_family().vae_temporal * self.block_frames
        return n - (self.model_family().vae_temporal - 1) if block_index == 0 else n

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
