import json
import subprocess

import numpy as np

from transports.encoder import H264Encoder
from transports.mpegts import MpegTsWriter, open_file
from transports.y4m import Y4MWriter
from media import moving_gradient

W, H, FPS = 160, 96, 8


def frames(n, start=0):
    return moving_gradient(n, W, H, start)

def encode(n):
    enc = H264Encoder(W, H, FPS, keyframe_interval_s=2.0)
    return enc.encode(frames(n), block=0, epoch=0) + enc.flush()


def probe(path_or_dash, data=None):
    r = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-count_frames",
                        "-of", "json", path_or_dash], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    streams = json.loads(r.stdout)["streams"]
    assert len(streams) == 1
    return streams[0]


def test_packets_to_ts_probe_and_remux_to_mp4(tmp_path):
    packets = encode(40)
    chunks = []
    w = MpegTsWriter(chunks.append, W, H, FPS)
    w.write_many(packets[3:])  # starts mid-GOP: waits for the keyframe at pts 16
    assert w.skipped == 13 and w.packets == 24
    w.close()
    ts = b"".join(chunks)
    assert len(chunks) > 1 and ts[0] == 0x47 and len(ts) % 188 == 0
    (tmp_path / "a.ts").write_bytes(ts)
    s = probe(str(tmp_path / "a.ts"))
    assert s["codec_name"] == "h264" and (s["width"], s["height"]) == (W, H)
    assert int(s["nb_read_frames"]) == 24
    assert s["r_frame_rate"] == "8/1"

    mp4 = tmp_path / "out.mp4"
    r = subprocess.run(["ffmpeg", "-v", "error", "-f", "mpegts", "-i", "-", "-c", "copy", str(mp4)],
                       input=ts, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    s = probe(str(mp4))
    assert s["codec_name"] == "h264" and int(s["nb_read_frames"]) == 24


def test_mp4_file_writer(tmp_path):
    path = tmp_path / "rec.mp4"
    w = open_file(str(path), W, H, FPS, fmt="mp4")
    w.write_many(encode(20))
    w.close()
    s = probe(str(path))
    assert s["codec_name"] == "h264" and (s["width"], s["height"]) == (W, H)
    assert int(s["nb_read_frames"]) == 20


def test_y4m_roundtrip(tmp_path):
    chunks = []
    y4m = Y4MWriter(chunks.append, W, H, FPS)
    y4m.write_frames(frames(4))
    y4m.write_frames(frames(3, start=4))
    data = b"".join(chunks)
    assert data.startswith(b"YUV4MPEG2 W160 H96 F8:1")
    assert len(data) == len(data.split(b"\n", 1)[0]) + 1 + 7 * (6 + W * H * 3 // 2)
    s = probe("-", data)
    assert s["codec_name"] == "rawvideo" and (s["width"], s["height"]) == (W, H)
    assert int(s["nb_read_frames"]) == 7
    # decode back through ffmpeg to RGB and compare with the input
    r = subprocess.run(["ffmpeg", "-v", "error", "-f", "yuv4mpegpipe", "-i", "-",
                        "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], input=data,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    back = np.frombuffer(r.stdout, np.uint8).reshape(7, H, W, 3)
    assert np.abs(back[5].astype(int) - frames(1, start=5)[0].astype(int)).mean() < 4
