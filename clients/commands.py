"""Client subcommands of the `streamer` CLI: prompt, status, record, timeline, watch.

streamer/cli.py calls `add_client_commands(subparsers)`; each subcommand sets `func(args) -> int`.
Failures (no daemon, timeouts, {"ok": false}) print one line to stderr and return 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from clients.client import (DEFAULT_CONTROL, DEFAULT_PUBLISH, WAIT_TIMEOUT, ClientError, ClientTimeout,
                            ControlClient)
from streamer.protocol import DEFAULT_BLEND_BLOCKS, DEFAULT_MODE, MODES

DEFAULT_TIMEOUT = 5.0  # seconds for a reply (--timeout)
# Keys shown first, in this order; everything else follows alphabetically.
_FIRST = ("state", "paused", "block", "block_index", "fps", "prompt", "epoch", "queue_depth", "ranks")


def _fail(message: str) -> int:
    print(f"streamer: error: {message}", file=sys.stderr)
    return 1


def _client(args, timeout: float | None = None) -> ControlClient:
    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.readline().strip()
    return ControlClient(args.control, timeout=args.timeout if timeout is None else timeout, token=token)


def _checked(reply: dict) -> dict:
    if reply.get("ok") is not True:
        raise ClientError(f"daemon refused: {reply.get('error', reply)}")
    return reply


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def _render(value):
    """Scalars as text; dicts as nested key/value tables; lists of dicts as tables with one row each."""
    if isinstance(value, dict):
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="cyan", no_wrap=True)
        table.add_column()
        for key in sorted(value, key=str):
            table.add_row(str(key), _render(value[key]))
        return table
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(k for row in value for k in row))
        table = Table(*map(str, columns), box=None, header_style="bold cyan", pad_edge=False)
        for row in value:
            table.add_row(*(_render(row.get(c)) for c in columns))
        return table
    if isinstance(value, list):
        return Text(", ".join(_fmt(v) for v in value))
    return Text(_fmt(value))


def render_status(reply: dict, title: str = "streamer status") -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    keys = [k for k in _FIRST if k in reply] + sorted(k for k in reply if k not in _FIRST and k not in ("ok", "id"))
    for key in keys:
        table.add_row(str(key), _render(reply[key]))
    return table


def cmd_prompt(args) -> int:
    if args.wait and args.at_block is not None:
        return _fail("--wait is only for changes now, not with --at-block")
    timeout = args.timeout if args.timeout is not None else WAIT_TIMEOUT if args.wait else DEFAULT_TIMEOUT
    t0, sent = time.monotonic(), False
    try:
        with _client(args, timeout) as client:
            if args.wait:  # is a daemon there at all? (else the wait would say so only after its long timeout)
                _checked(client.status(timeout=min(timeout, DEFAULT_TIMEOUT)))
                t0, sent = time.monotonic(), True
            reply = client.set_prompt(args.text, mode=args.mode, blocks=args.blocks, at_block=args.at_block,
                                      wait=args.wait, timeout=timeout)
    except ClientTimeout as e:
        if sent:
            return _fail(f"the change was not confirmed on the stream within {timeout:g} s (--timeout): {e}")
        return _fail(str(e))
    except ClientError as e:
        return _fail(str(e))
    round_trip = time.monotonic() - t0
    if reply.get("ok") is not True and "epoch" in reply:  # accepted, but it did not reach the stream in time
        return _fail(f"prompt accepted ({args.mode}): epoch {reply['epoch']}, first block "
                     f"{reply.get('first_block')}, but not confirmed on the stream: {reply.get('error')}")
    try:
        _checked(reply)
    except ClientError as e:
        return _fail(str(e))
    print(f"prompt accepted ({args.mode}): epoch {reply.get('epoch')}, first block {reply.get('first_block')}")
    if args.wait:
        on = reply.get("on_stream") or {}
        print(f"on the stream at block {on.get('block')}: reaction {_fmt_s(on.get('reaction_s'))} (daemon), "
              f"round trip {round_trip:.3f} s (this client)")
    return 0


def _fmt_s(seconds) -> str:
    return f"{seconds:.3f} s" if isinstance(seconds, (int, float)) else "-"


def cmd_cancel(args) -> int:
    try:
        with _client(args) as client:
            reply = _checked(client.cancel(None if args.all else args.epoch))
    except ClientError as e:
        return _fail(str(e))
    epochs = reply.get("cancelled", [])
    print(f"cancelled the change{'s' if len(epochs) > 1 else ''} of epoch{'s' if len(epochs) > 1 else ''} "
          f"{', '.join(map(str, epochs))}" if epochs else "cancelled nothing: no scheduled change was pending")
    return 0


def cmd_status(args) -> int:
    try:
        with _client(args) as client:
            reply = _checked(client.status())
    except ClientError as e:
        return _fail(str(e))
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    else:
        Console().print(render_status(reply))
    return 0


def cmd_record(args) -> int:
    from clients.record import record  # PyAV is only needed here

    try:
        frames = record(args.file, args.publish, duration=args.duration, max_blocks=args.blocks,
                        wait_timeout=args.wait, log=lambda m: print(m, file=sys.stderr))
    except ClientError as e:
        return _fail(str(e))
    except (OSError, ValueError) as e:
        return _fail(f"cannot record to {args.file}: {e}")
    if not frames:
        return _fail("nothing recorded: no keyframe arrived")
    print(f"wrote {frames} frames to {args.file}", file=sys.stderr)
    return 0


def cmd_timeline(args) -> int:
    from clients.timeline import TimelineError, load_timeline, run_timeline

    try:
        entries = load_timeline(args.file)
    except TimelineError as e:
        return _fail(str(e))
    try:
        with _client(args) as client:
            results = run_timeline(entries, client)
    except ClientError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("timeline interrupted")
    failed = sum(1 for _, reply in results if not reply.get("ok"))
    return _fail(f"{failed} of {len(results)} prompt changes were refused") if failed else 0


def cmd_watch(args) -> int:
    client = ControlClient(args.control, timeout=min(args.timeout, max(args.interval * 2, 1.0)))
    console = Console()

    def view():
        now = time.strftime("%H:%M:%S")
        try:
            reply = client.status()
        except ClientError as e:  # keep watching: the daemon may be restarting
            body = Text(f"{now}  {e}", style="bold red")
        else:
            if reply.get("ok"):
                body = render_status(reply, title=f"streamer @ {args.control}  {now}")
            else:
                body = Text(f"{now}  status refused: {reply.get('error', reply)}", style="bold red")
        return Group(body, Text("Ctrl-C to quit", style="dim"))

    try:
        with Live(view(), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(args.interval)
                live.update(view())
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _publish_endpoint(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--publish", default=DEFAULT_PUBLISH, metavar="ADDR",
                   help="daemon publish endpoint (default %(default)s, env STREAMER_PUBLISH)")
    return p


def _endpoints() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--control", default=DEFAULT_CONTROL, metavar="ADDR",
                   help="daemon control endpoint (default %(default)s, env STREAMER_CONTROL)")
    _publish_endpoint(p)
    p.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds to wait for a reply (default {DEFAULT_TIMEOUT:g}; prompt --wait: {WAIT_TIMEOUT:g})")
    p.add_argument("--token-file", metavar="FILE",
                   help="the daemon's token (its first line); default: $STREAMER_TOKEN, if set")
    return p


def add_client_commands(subparsers) -> None:
    """Register prompt, cancel, status, record, timeline and watch on an argparse subparsers object."""
    common = [_endpoints()]

    # its own copy of the endpoint options: the --timeout default below must not change the other commands
    p = subparsers.add_parser("prompt", parents=[_endpoints()], help="change the prompt of the running stream")
    p.add_argument("text", help="the new prompt")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                   help="soft: blocks in flight follow now; queue: new blocks only; blend: interpolate over "
                        f"--blocks blocks; cut: flush and refill (default {DEFAULT_MODE})")
    p.add_argument("--blocks", type=int, metavar="K",
                   help=f"blend length in blocks (blend only, default {DEFAULT_BLEND_BLOCKS})")
    p.add_argument("--at-block", type=int, metavar="N", help="apply at block index N instead of now")
    p.add_argument("--wait", action="store_true",
                   help="return once the change is on the stream (its first block published) and print how long "
                        "that took: the daemon's reaction time and this client's round trip")
    p.set_defaults(func=cmd_prompt, timeout=None)  # None: 5 s, or with --wait longer than the daemon waits

    p = subparsers.add_parser("cancel", parents=common, help="withdraw scheduled prompt changes (--at-block)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("epoch", nargs="?", type=int, help="the epoch that `prompt` acknowledged")
    which.add_argument("--all", action="store_true", help="every scheduled change not yet applied")
    p.set_defaults(func=cmd_cancel)

    p = subparsers.add_parser("status", parents=common, help="show the daemon's status")
    p.add_argument("--json", action="store_true", help="print the raw JSON reply")
    p.set_defaults(func=cmd_status)

    # only the video: no control request, so neither --control, --timeout nor --token-file (--wait is its timeout)
    p = subparsers.add_parser("record", parents=[_publish_endpoint(argparse.ArgumentParser(add_help=False))],
                              help="record the live stream to an MP4 (no re-encode)")
    p.add_argument("file", metavar="FILE.mp4")
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds of video")
    p.add_argument("--blocks", type=_positive_int, metavar="N",
                   help="stop after N blocks (the first may be partial: recording starts at a keyframe)")
    p.add_argument("--wait", type=_positive_float, default=15.0, metavar="S",
                   help="give up if no keyframe arrives within S seconds (default %(default)s)")
    p.set_defaults(func=cmd_record)

    p = subparsers.add_parser("timeline", parents=common, help="run a TOML/JSON timeline of prompt changes")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_timeline)

    p = subparsers.add_parser("watch", parents=common, help="live status dashboard (Ctrl-C to quit)")
    p.add_argument("--interval", type=_positive_float, default=0.5, metavar="S",
                   help="seconds between status polls (default %(default)s)")
    p.set_defaults(func=cmd_watch)
