"""Ranks started by torchrun (the several-hosts set-up, here on one host with gloo) attached to a daemon."""
import subprocess
import sys

import pytest

from conftest import ROOT, DaemonProc, free_port


def _torchrun(cfg_path, link, extra_env=None, extra=()):
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "pipeline.process.worker",
           "--serve-config", str(cfg_path), "--link", link, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1", **(extra_env or {})})


def test_torchrun_ranks_attach_stream_and_stop_cleanly(tmp_path):
    (tmp_path / "token").write_text("attach-secret\n")
    cfg = tmp_path / "s.toml"  # the same file on every host: rank 0 presents the token it names
    cfg.write_text(f"model = \"tiny\"\nranks = 2\nsteps = 4\ntoken_file = \"{tmp_path / 'token'}\"\n")
    link = f"tcp://127.0.0.1:{free_port()}"
    d = DaemonProc("--config", str(cfg), "--attach", link, http=False, token="attach-secret")
    ranks = _torchrun(cfg, link)
    try:
        st = d.wait_streaming(timeout=120)
        assert [r["rank"] for r in st["ranks"]] == [0, 1]
        assert d.stop() == 0, d.log()
        assert ranks.wait(timeout=30) == 0, ranks.stderr.read().decode()[-2000:]
    finally:
        for p in (d.proc, ranks):
            if p.poll() is None:
                p.kill()


@pytest.mark.parametrize("theirs_extra, ours_extra, needle", [
    ("steps = 6\n", "", "another configuration"),  # another configuration
    ("", "token_file = \"{token}\"\n", "did not present the token"),  # our settings have a token, theirs none
])
def test_an_attached_rank_that_does_not_match_is_refused(tmp_path, theirs_extra, ours_extra, needle):
    (tmp_path / "token").write_text("attach-secret\n")
    base = "model = \"tiny\"\nranks = 2\n"
    ours, theirs = tmp_path / "a.toml", tmp_path / "b.toml"
    ours.write_text(base + "steps = 4\n" + ours_extra.format(token=tmp_path / "token"))
    theirs.write_text(base + (theirs_extra or "steps = 4\n"))
    link = f"tcp://127.0.0.1:{free_port()}"
    d = DaemonProc("--config", str(ours), "--attach", link, http=False)
    ranks = _torchrun(theirs, link)
    try:
        rc = d.proc.wait(timeout=120)
        assert rc == 2
        assert needle in d.log(), d.log()
        ranks.wait(timeout=60)  # rank 0 is told to stop; torchrun ends
    finally:
        for p in (d.proc, ranks):
            if p.poll() is None:
                p.kill()
        d.stop()


def test_ranks_whose_daemon_dies_do_not_linger(tmp_path):
    """Ranks started by torchrun have no death pipe: rank 0 leaves when the daemon falls silent (--daemon-timeout,
    30 s by default; 8 here), even with its outgoing queue full, and the others follow when the ring breaks."""
    import os
    import signal

    cfg = tmp_path / "s.toml"
    cfg.write_text("model = \"tiny\"\nranks = 2\nsteps = 4\n")
    link = f"tcp://127.0.0.1:{free_port()}"
    d = DaemonProc("--config", str(cfg), "--attach", link, http=False)
    ranks = _torchrun(cfg, link, extra=("--daemon-timeout", "8"))
    try:
        d.wait_streaming(timeout=120)
        os.kill(d.proc.pid, signal.SIGKILL)
        rc = ranks.wait(timeout=180)  # about 8 s; the timeout only catches the hang this test is about
        assert rc != 0
        assert b"no word from the daemon for 8s" in ranks.stderr.read()
    finally:
        for p in (d.proc, ranks):
            if p.poll() is None:
                p.kill()
        d.stop()


@pytest.mark.parametrize("value", ["1", "-3", "nan"])
def test_a_daemon_timeout_under_the_ping_interval_is_refused(value, capsys):
    from pipeline.process.worker import main

    with pytest.raises(SystemExit) as e:
        main(["--serve-config", "unused.toml", "--link", "tcp://127.0.0.1:1", "--daemon-timeout", value])
    assert e.value.code == 2 and "--daemon-timeout must be at least 5 seconds" in capsys.readouterr().err
