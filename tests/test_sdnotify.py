"""streamer.sdnotify against real unix datagram sockets (a path in tmp_path, and an abstract name)."""
import asyncio
import os
import socket
import uuid

import pytest

from streamer.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)  # guard against hangs only
    yield path, s
    s.close()


def received(s) -> str:
    return s.recv(4096).decode()


def test_messages_reach_a_path_socket(listener, monkeypatch):
    path, s = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_env()
    assert n.enabled and n.watchdog_interval() == 30.0
    assert n.ready()
    assert received(s) == "READY=1"
    assert n.ready("streaming block 0")
    assert received(s) == "READY=1\nSTATUS=streaming block 0"
    assert n.status("block 12, 2.3 fps")
    assert received(s) == "STATUS=block 12, 2.3 fps"
    assert n.status("two\nlines")
    assert received(s) == "STATUS=two lines"  # a newline would start a new assignment
    assert n.watchdog()
    assert received(s) == "WATCHDOG=1"
    assert n.extend_timeout(90)
    assert received(s) == "EXTEND_TIMEOUT_USEC=90000000"
    assert n.stopping()
    assert received(s) == "STOPPING=1"
    n.close()


def test_abstract_socket(monkeypatch):
    name = f"endless-streamer-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(10)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        n = Notifier.from_env()
        assert n.watchdog_interval() is None
        assert n.ready("up")
        assert received(s) == "READY=1\nSTATUS=up"
        assert n.watchdog()  # sent even without WATCHDOG_USEC: systemd ignores it then
        assert received(s) == "WATCHDOG=1"
        n.close()
    finally:
        s.close()


def test_noop_outside_systemd(monkeypatch):
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(key, raising=False)
    n = Notifier.from_env()
    assert not n.enabled
    assert n.watchdog_interval() is None
    assert (n.ready("x"), n.status("x"), n.watchdog(), n.stopping()) == (False, False, False, False)

    async def checks_without_pinging():  # the health checks still run, nothing is sent
        seen = asyncio.Event()
        calls = []

        def healthy():
            calls.append(1)
            if len(calls) == 3:
                seen.set()
            return True
        task = asyncio.ensure_future(n.watchdog_loop(healthy, check_every=0.001))
        await asyncio.wait_for(seen.wait(), 30)
        task.cancel()
    asyncio.run(checks_without_pinging())


def test_watchdog_env_parsing():
    pid = str(os.getpid())
    assert Notifier.from_env({"WATCHDOG_USEC": "20000000"}).watchdog_interval() == 10.0
    assert Notifier.from_env({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": pid}).watchdog_interval() == 10.0
    assert Notifier.from_env({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier.from_env({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "x"}).watchdog_interval() is None
    assert Notifier.from_env({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert Notifier.from_env({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert Notifier.from_env({}).address is None


def test_unset_hides_variables_from_children(listener, monkeypatch):
    path, s = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    n = Notifier.from_env(unset=True)
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    assert n.watchdog_interval() == 2.0
    assert n.watchdog()
    assert received(s) == "WATCHDOG=1"
    n.close()


def test_send_failure_is_not_fatal(tmp_path):
    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert n.enabled
    assert n.ready() is False  # logged, not raised
    n.close()


def test_watchdog_loop_pings_only_while_healthy(listener):
    path, s = listener
    n = Notifier(path, watchdog_usec=2_000)  # 1 ms interval
    states = iter([True, True, False, True])

    async def main():
        task = asyncio.ensure_future(n.watchdog_loop(lambda: next(states, False)))
        got = []
        loop = asyncio.get_running_loop()
        for _ in range(3):
            got.append(await loop.run_in_executor(None, received, s))
        task.cancel()
        return got

    assert asyncio.run(main()) == ["WATCHDOG=1"] * 3
    s.setblocking(False)
    with pytest.raises(BlockingIOError):  # the unhealthy tick sent nothing, the loop stopped when cancelled
        s.recv(4096)
    n.close()
