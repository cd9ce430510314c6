"""Dual parallelism through the whole daemon (CPU, gloo): `streamer serve --ranks 2` writes the same frames, byte
for byte, as `--ranks 1`: ranks, decode and the Y4M writer, not only the engine (tests/test_ranks.py)."""
import re

from conftest import DaemonProc

BLOCKS = 4


def y4m_frames(data: bytes) -> list[bytes]:
    header, _, body = data.partition(b"\n")
    w = int(re.search(rb" W(\d+)", header).group(1))
    h = int(re.search(rb" H(\d+)", header).group(1))
    assert b" C" not in header or b" C420" in header, header
    size = w * h * 3 // 2
    frames, i = [], 0
    while body.startswith(b"FRAME", i):
        start = body.index(b"\n", i) + 1
        if start + size > len(body):
            break  # a frame cut short by the stop: not compared
        frames.append(body[start:start + size])
        i = start + size
    return frames


def run(world: int, path) -> list[bytes]:
    with open(path, "wb") as f:
        d = DaemonProc("--ranks", str(world), "--stdout", "y4m", http=False, stdout=f)
        d.wait_streaming()
        d.wait_status(lambda s: s["blocks_published"] >= BLOCKS, f"{BLOCKS} published blocks")
        assert d.stop() == 0, d.log()
    return y4m_frames(path.read_bytes())


def test_two_ranks_write_the_frames_of_one_rank(tmp_path):
    one = run(1, tmp_path / "w1.y4m")
    two = run(2, tmp_path / "w2.y4m")
    n = min(len(one), len(two))
    assert n >= 4 * 2 * (BLOCKS - 1)  # the tiny model's blocks: 2 latent frames -> 8 video frames (5 the first)
    assert len(set(one[:n])) > 1  # a moving picture, not one frame repeated
    for i in range(n):
        assert one[i] == two[i], f"frame {i} differs between --ranks 1 and --ranks 2"
