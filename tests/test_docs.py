"""The documentation a user scans stays true to the code: the options reference is generated from the options
tree, every relative link resolves, and the README keeps its two set-up commands (the project's contract)."""
import os
import re

from pipeline.settings import OPTIONS, reference_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + [os.path.join(ROOT, "docs", f) for f in
                                            sorted(os.listdir(os.path.join(ROOT, "docs"))) if f.endswith(".md")]


def test_the_options_reference_is_generated_from_the_options_tree():
    with open(os.path.join(ROOT, "docs", "options.md")) as f:
        text = f.read()
    assert text == reference_markdown(), "docs/options.md is stale: regenerate it (its first lines say how)"
    for o in OPTIONS:
        assert f"`--{o.name.replace('_', '-')}" in text


def test_every_relative_link_resolves():
    for path in DOCS:
        with open(path) as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert os.path.exists(os.path.join(os.path.dirname(path), target)), f"{path}: {target}"


def test_the_readme_keeps_its_two_set_up_commands_and_no_link_outside_the_repository():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert "pip install -e . torch==2.13.0 && streamer serve" in text
    assert "pip install -e '.[test]' torch==2.13.0 && OMP_NUM_THREADS=1 python -m pytest -q" in text
    for path in DOCS:
        with open(path) as f:
            assert "../shared/" not in f.read(), path


def test_the_example_sink_in_extending_md_works_against_a_real_fanout(tmp_path):
    """docs/extending.md's sink, run as written: it writes every packet it is given and reports it, the daemon's
    spawn runs it, and it stops within its deadline."""
    import asyncio
    from fractions import Fraction

    from streamer.sinks import Sink
    from transports.fanout import FanOut
    from transports.packet import EncodedPacket

    with open(os.path.join(ROOT, "docs", "extending.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    scope = {"Sink": Sink, "FanOut": FanOut, "asyncio": asyncio}
    exec(blocks[0], scope)  # the class, as the page shows it
    data = [b"\x00\x00\x00\x01\x65key", b"\x00\x00\x00\x01\x41delta"]

    class Recorder:  # the sink's file, telling the test when everything is written (no polling)
        def __init__(self, real, done):
            self.real, self.done, self.n = real, done, 0

        def write(self, b):
            self.n += self.real.write(b)
            if self.n == sum(map(len, data)):
                self.done.set()
            return len(b)

        def close(self):
            self.real.close()

    async def run():
        fanout, done = FanOut(), asyncio.Event()

        def spawn(name, coro):
            return asyncio.get_running_loop().create_task(coro, name=name)

        path = tmp_path / "out.h264"
        sink = scope["H264File"](str(path), fanout, spawn)
        sink.file = Recorder(sink.file, done)
        assert isinstance(sink, Sink) and sink.status()["kind"] == "file"
        for i, d in enumerate(data):
            fanout.publish(EncodedPacket(data=d, pts=i, fps=Fraction(16), keyframe=i == 0, block=0, epoch=0,
                                         width=64, height=64))
        await asyncio.wait_for(done.wait(), 30)
        assert sink.stats()["bytes"] == sum(map(len, data))
        await sink.stop(5.0)
        assert sink.task.done()
        return path.read_bytes()

    assert asyncio.run(asyncio.wait_for(run(), 60)) == b"".join(data)


def test_every_command_prints_its_help():
    """`streamer X --help` for every subcommand formats every option's help (a bare % in one once broke `serve`)."""
    import contextlib
    import io

    import pytest

    from clients.cli import main
    from clients.commands import add_client_commands
    from streamer.cli import build_parser

    commands = build_parser(add_client_commands)._subparsers._group_actions[0].choices
    assert {"serve", "convert", "prompt", "status", "record"} <= set(commands)
    for name in [None, *commands]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as ended:
            main([name, "--help"] if name else ["--help"])
        assert ended.value.code == 0, name
        assert "usage:" in out.getvalue(), name
