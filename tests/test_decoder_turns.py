"""The runner's decode thread taking turns with the engine (one GPU, or --compile): wait_turn returns only once
every block handed over is decoded, and never hangs when the decoder has failed; a decoder that warms up (compiles
or captures) does so before the engine's first tick even when it decodes beside the ticks."""
import threading

import pytest
import torch

from pipeline.config import EngineConfig
from pipeline.decoders.wan_vae import StreamingDecoder
from pipeline.dualparal.engine import FinishedBlock
from pipeline.prompts import Cond
from pipeline.process.runner import Decoder
from pipeline.decoders.tiny_vae import random_tiny_decoder
from pipeline.model.random_wan import build_tiny_components
from pipeline.decoders.tiny_vae import StreamingTinyDecoder

HANG = 120  # seconds: only to catch a hang


@pytest.fixture(scope="module")
def vae():
    return build_tiny_components(0)["vae"]


def block(i: int) -> FinishedBlock:
    lat = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(i))
    return FinishedBlock(index=i, latents=lat, cond=Cond(parts=(("a", 1.0),), epoch=0), tick=i)


def in_thread(fn) -> None:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(HANG)
    assert not t.is_alive(), "wait_turn hung"


def test_wait_turn_returns_after_every_block_is_decoded(vae):
    """...and does not wait for the frames' delivery: the sink of the last block is held until wait_turn has
    returned (with the old order, decoded then delivered then the turn given back, this hung)."""
    got, errors = [], []
    release = threading.Event()

    def sink(fb, frames):
        got.append((fb.index, frames.shape))
        if fb.index == 2:
            assert release.wait(HANG), "the last sink was never released"
    dec = Decoder(StreamingDecoder(vae), EngineConfig(decode_chunk=1), sink, errors.append, take_turns=True)
    try:
        for i in range(3):
            dec.put(block(i))
        in_thread(dec.wait_turn)
        release.set()
        dec.close()
        # all three decoded and delivered, in order, with their frames
        assert [g[0] for g in got] == [0, 1, 2]
        assert [g[1][0] for g in got] == [5, 8, 8]  # 4F-3 frames for a stream's first block, then 4F
        assert not errors
    finally:
        release.set()
        dec.close()


def test_wait_turn_does_not_hang_on_a_failed_decoder(vae):
    errors = []

    def boom(fb, frames):
        raise RuntimeError("sink broke")
    dec = Decoder(StreamingDecoder(vae), EngineConfig(decode_chunk=1), boom, errors.append, take_turns=True)
    dec.put(block(0))
    dec.put(block(1))  # never decoded: the thread stopped at the first
    in_thread(dec.wait_turn)
    assert [str(e) for e in errors] == ["sink broke"]
    dec.close()


class WarmingDecoder(StreamingTinyDecoder):
    """The tiny decoder torch.compile'd with dynamo's eager backend (tracing, no codegen), which says when its
    warm-up has finished."""

    def __init__(self):
        super().__init__(random_tiny_decoder(16), compile_backend="eager")
        self.warmed = threading.Event()

    def warm_up(self, *shape):
        super().warm_up(*shape)
        self.warmed.set()


@pytest.mark.parametrize("take_turns", [True, False])
def test_the_engine_waits_for_the_warm_up_either_way(take_turns):
    errors, took = [], []
    reported = threading.Event()
    dec = WarmingDecoder()
    d = Decoder(dec, EngineConfig(block_frames=2, height=32, width=48), lambda fb, f: None, errors.append,
                take_turns=take_turns, on_warm=lambda s: (took.append(s), reported.set()))
    try:
        in_thread(d.wait_turn)
        assert dec.warmed.is_set() and not errors
        assert reported.wait(HANG) and len(took) == 1 and took[0] > 0  # the warm-up's duration, reported once
    finally:
        d.close()


class GatedDecoder(StreamingTinyDecoder):
    """The tiny decoder, but each block's decode waits for the test to open its gate (a decoder slower than the
    engine, on the test's schedule)."""

    def __init__(self):
        super().__init__(random_tiny_decoder(16))
        self.started = [threading.Event() for _ in range(4)]
        self.gates = [threading.Event() for _ in range(4)]
        self.calls = 0

    def decode_block(self, latents, new_shot=False):
        i, self.calls = self.calls, self.calls + 1
        self.started[i].set()
        assert self.gates[i].wait(HANG), "the gate was never opened"
        return super().decode_block(latents, new_shot=new_shot)


def test_a_slow_decoder_beside_the_ticks_holds_the_engine_back():
    """Beside the ticks (take_turns=False) the engine may run one block ahead of the decoder, not more: a decoder
    slower than real time once let the engine run 170 blocks ahead, and a prompt change took 100 s to show."""
    delivered = [threading.Event() for _ in range(4)]
    errors = []
    slow = GatedDecoder()
    d = Decoder(slow, EngineConfig(block_frames=2, height=32, width=48), lambda fb, f: delivered[fb.index].set(),
                errors.append, take_turns=False)
    try:
        assert d.ready()
        d.put(block(0))
        assert slow.started[0].wait(HANG)
        assert d.ready()  # one block being decoded: the next tick may run beside it
        d.put(block(1))
        assert not d.ready()  # a second one waiting: the engine must wait
        slow.gates[0].set()
        assert delivered[0].wait(HANG)
        assert d.ready()
        in_thread(d.wait_turn)
        d.put(block(2))
        assert not d.ready()
        for g in slow.gates:
            g.set()
        assert delivered[2].wait(HANG) and d.ready() and not errors
    finally:
        for g in slow.gates:
            g.set()
        d.close()
