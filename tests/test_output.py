"""The encoder stage: a bounded backlog that drops the oldest blocks instead of growing or blocking its caller."""
import threading

import numpy as np

from streamer.output import MAX_BACKLOG, EncoderThread
from transports.fanout import FanOut
from transports.video_format import VideoFormat


def test_a_stuck_encoder_drops_the_oldest_blocks_and_never_blocks_the_caller():
    gate, entered = threading.Event(), threading.Event()
    published = []

    def slow_sink(frames):  # the raw (y4m) sink runs first on the encoder thread: hold it there
        entered.set()
        gate.wait(60)
    stage = EncoderThread(VideoFormat(32, 32, 8.0), FanOut(), raw_sink=slow_sink, on_published=lambda b, n, e: published.append(b))
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    stage.put(frames, 0, 0)
    assert entered.wait(60)  # block 0 is being encoded (stuck); the next ones queue up
    for b in range(1, MAX_BACKLOG + 5):
        stage.put(frames, b, 0)  # never blocks
    assert stage.backlog() == MAX_BACKLOG and stage.dropped_blocks == 4
    gate.set()
    stage.close(timeout=60)
    assert published == [0] + list(range(5, MAX_BACKLOG + 5))  # blocks 1-4 were the oldest waiting: dropped
    assert stage.stats()["dropped_blocks"] == 4
