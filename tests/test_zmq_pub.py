import json

import av
import zmq

from transports.encoder import H264Encoder
from transports.zmq_pub import VideoPublisher
from media import moving_gradient

W, H, FPS = 160, 96, 8


def frames(n):
    return moving_gradient(n, W, H)

def test_sub_receives_decodable_packets_and_events():
    ctx = zmq.Context()
    pub = VideoPublisher(ctx, "tcp://127.0.0.1:*", sndhwm=100)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"video.h264")
    sub.setsockopt(zmq.SUBSCRIBE, b"events")
    sub.connect(pub.endpoint)
    assert pub.endpoint.startswith("tcp://127.0.0.1:")
    try:
        # slow joiner: publish a hello until the subscription has propagated
        for _ in range(200):
            assert pub.send_event({"type": "hello"})
            if sub.poll(50):
                break
        else:
            raise AssertionError("SUB never received the hello event")
        topic, header, payload = sub.recv_multipart()
        assert topic == b"events" and json.loads(header) == {"type": "hello"} and payload == b""
        while sub.poll(0):  # drop further hellos
            sub.recv_multipart()

        enc = H264Encoder(W, H, FPS, keyframe_interval_s=1.0)
        packets = enc.encode(frames(12), block=3, epoch=2) + enc.flush()
        for p in packets:
            assert pub.send_packet(p)
        pub.send_event({"type": "block", "block": 3})

        got = []
        while True:
            assert sub.poll(10000), "timed out waiting for packets"
            msg = sub.recv_multipart()
            if msg[0] == b"events":
                assert json.loads(msg[1]) == {"type": "block", "block": 3}
                break
            got.append(msg)
        assert len(got) == 12
        headers = [json.loads(h) for _, h, _ in got]
        assert [h["pts"] for h in headers] == list(range(12))
        assert all(h["block"] == 3 and h["epoch"] == 2 and h["fps"] == 8 for h in headers)
        assert (headers[0]["width"], headers[0]["height"], headers[0]["keyframe"]) == (W, H, True)

        # decode the concatenated Annex-B stream from the first keyframe after pts 0
        first = next(i for i, h in enumerate(headers) if h["keyframe"] and i > 0)
        stream = b"".join(p for _, _, p in got[first:])
        dec = av.CodecContext.create("h264", "r")
        out = []
        for pk in dec.parse(stream) + dec.parse(None):
            out += dec.decode(pk)
        out += dec.decode(None)
        assert len(out) == 12 - first
        assert all((f.width, f.height) == (W, H) for f in out)
    finally:
        sub.close(0)
        pub.close()
        ctx.term()


def test_a_subscriber_that_never_reads_costs_drops_not_blocking():
    ctx = zmq.Context()
    pub = VideoPublisher(ctx, "tcp://127.0.0.1:*", sndhwm=10)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 10)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub.endpoint)
    try:
        while not sub.poll(50):  # the subscription has propagated once one message arrives
            pub.send_event({"type": "hello"})
        for i in range(20_000):  # with no reader, ZMQ drops what is past the high-water marks
            pub.send_event({"type": "flood", "i": i, "pad": "x" * 64})
        assert pub.sent + pub.dropped >= 20_000  # every send returned (none blocked)
        got = 0
        while sub.poll(100):
            sub.recv_multipart()
            got += 1
        # the slow reader lost most of them: dropped, never back-pressure (libzmq's high-water marks are approximate:
        # with its batching and I/O threads ~2,500-3,000 of the 20,000 got through marks of 10 on a 2-core machine)
        assert got < 20_000 // 4
    finally:
        sub.close()
        pub.close()
        ctx.term()
