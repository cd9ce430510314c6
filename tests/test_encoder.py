import av
import numpy as np
import pytest

from transports.encoder import H264Encoder
from media import moving_gradient

W, H, FPS = 160, 96, 8


def smooth_frames(n, start=0):
    return moving_gradient(n, W, H, start)

def noisy_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    base = smooth_frames(n)
    noise = rng.integers(-40, 40, base.shape)
    return np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)


def decode(packets):
    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for p in packets:
        frames += ctx.decode(av.Packet(p.data))
    frames += ctx.decode(None)
    return frames


def nal_types(data: bytes):
    return {data[i + 3] & 0x1F for i in range(len(data) - 3) if data[i:i + 3] == b"\0\0\1"}


def test_encode_decode_from_middle_keyframe():
    enc = H264Encoder(W, H, FPS, keyframe_interval_s=2.0)
    packets = []
    for b in range(6):
        frames = noisy_frames(9, seed=b) if b % 2 else smooth_frames(9, start=9 * b)
        got = enc.encode(frames, block=b, epoch=7)
        assert len(got) == 9  # zerolatency: one packet per frame, no delay
        packets += got
    packets += enc.flush()
    assert [p.pts for p in packets] == list(range(54))
    assert [p.block for p in packets] == [i // 9 for i in range(54)]
    assert all(p.epoch == 7 and (p.width, p.height) == (W, H) for p in packets)
    assert all(p.data.startswith(b"\0\0\0\1") or p.data.startswith(b"\0\0\1") for p in packets)

    keys = [p.pts for p in packets if p.keyframe]
    assert keys[0] == 0
    gaps = np.diff(keys + [len(packets)])
    assert gaps.max() <= 2 * FPS  # a keyframe at least every 2 s of frames
    for p in packets:  # every keyframe is an IDR with SPS/PPS in front
        if p.keyframe:
            assert {5, 7, 8} <= nal_types(p.data)
        else:
            assert 5 not in nal_types(p.data)

    mid = keys[1]
    assert mid > 0
    frames = decode(packets[mid:])
    assert len(frames) == len(packets) - mid
    assert all((f.width, f.height) == (W, H) for f in frames)
    # content check on a smooth frame (block 2 covers pts 18..26)
    idx = 20 - mid
    rgb = frames[idx].to_ndarray(format="rgb24")
    err = np.abs(rgb.astype(int) - smooth_frames(1, start=20)[0].astype(int)).mean()
    assert err < 12, err


def test_request_keyframe_makes_next_packet_idr():
    enc = H264Encoder(W, H, FPS, keyframe_interval_s=10.0)
    first = enc.encode(smooth_frames(5), block=0, epoch=0)
    assert [p.keyframe for p in first] == [True, False, False, False, False]
    enc.request_keyframe()
    nxt = enc.encode(smooth_frames(3, start=5), block=1, epoch=0)
    assert [p.keyframe for p in nxt] == [True, False, False]
    assert 5 in nal_types(nxt[0].data) and 7 in nal_types(nxt[0].data)
    # the forced keyframe is a valid entry point
    assert len(decode(nxt)) == 3


def test_prefer_hw_falls_back_and_encodes():
    enc = H264Encoder(W, H, FPS, prefer_hw=True)
    assert enc.codec_name in ("libx264", "h264_nvenc")
    pk = enc.encode(smooth_frames(4)) + enc.flush()
    assert len(decode(pk)) == 4


def test_rejects_wrong_shape():
    enc = H264Encoder(W, H, FPS)
    with pytest.raises(ValueError):
        enc.encode(np.zeros((2, H + 2, W, 3), np.uint8))
    with pytest.raises(ValueError):
        H264Encoder(161, 96, FPS)
