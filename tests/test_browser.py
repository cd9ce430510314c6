"""The viewer page in a real headless Chromium (Debian's `chromium`, driven by the Python `playwright` package; no
browser download), against a daemon running the tiny model, everything on 127.0.0.1.

Needs Debian's chromium (`apt-get install chromium`, as .ci/run does); without it these tests fail with a clear
message rather than being skipped.
"""
import io
import json
import os
import tempfile
import time
import urllib.request

import numpy as np
import pytest

CHROMIUM = os.environ.get("STREAMER_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]


def _require_browser():
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "the playwright package is not installed"
    if why is None and not os.access(CHROMIUM, os.X_OK):
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if why:
        pytest.fail(why)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="streamer-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                   viewport={"width": 960, "height": 900})
        try:
            yield ctx
        finally:
            ctx.close()


def _status(daemon) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/status", timeout=5) as r:
        return json.loads(r.read())


def _open_viewer(browser, daemon):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{daemon.http_port}/")
    page.wait_for_function("window.viewer && viewer.connection === 'connected'", timeout=20_000)
    return page


def _decoded(page) -> int:
    return page.evaluate("viewer.framesDecoded")


def test_page_connects_decodes_and_shows_video(browser, daemon):
    page = _open_viewer(browser, daemon)
    try:
        page.wait_for_function("viewer.framesDecoded >= 30", timeout=30_000, polling=250)
        v = page.evaluate("({codec: viewer.codec, presented: viewer.framesPresented, meta: viewer.meta,"
                          " w: document.getElementById('video').videoWidth})")
        assert v["codec"] == "H264"  # the daemon's packets, passed through
        assert v["w"] == 64 and v["presented"] >= 10 and v["meta"]["block"] >= 0
        # the page shows what the daemon says
        page.wait_for_function("document.getElementById('latency').textContent.endsWith('ms')", timeout=10_000)
        assert page.text_content("#prompt-text").strip() == _status(daemon)["prompt"]
        # a non-blank picture on screen
        from PIL import Image

        shot = np.asarray(Image.open(io.BytesIO(page.locator("#video").screenshot())).convert("RGB"), np.float32)
        assert shot.shape[0] > 100 and shot.mean() > 10 and shot.std() > 10, (shot.mean(), shot.std())
        page.screenshot(path=os.path.join(tempfile.gettempdir(), "streamer-browser-test.png"))
    finally:
        page.close()


def test_prompt_from_the_page_reaches_the_daemon(browser, daemon):
    page = _open_viewer(browser, daemon)
    try:
        text = f"a yellow kite typed in the browser {time.monotonic():.0f}"
        page.fill("#prompt", text)
        page.select_option("#mode", "blend")
        page.fill("#blocks", "2")
        page.click("#send")
        page.wait_for_function("viewer.ack !== null", timeout=10_000)
        ack = page.evaluate("viewer.ack")
        assert ack["ok"] is True and isinstance(ack["first_block"], int) and ack["epoch"] >= 1, ack
        assert "accepted" in page.text_content("#ack")
        deadline = time.monotonic() + 20
        while _status(daemon)["prompt"] != text:
            assert time.monotonic() < deadline, _status(daemon)
            time.sleep(0.3)
        page.wait_for_function("t => document.getElementById('prompt-text').textContent.startsWith(t)", arg=text,
                               timeout=10_000)
        # a refused request shows the daemon's error, and the stream goes on
        page.evaluate("document.getElementById('prompt').removeAttribute('maxlength')")
        page.fill("#prompt", "x" * 5000)  # over the daemon's 2000-character limit
        page.click("#send")
        page.wait_for_function("viewer.ack && viewer.ack.ok === false", timeout=10_000)
        assert "refused" in page.text_content("#ack")
        n = _decoded(page)
        page.wait_for_function(f"viewer.framesDecoded >= {n + 8}", timeout=15_000)
    finally:
        page.close()


def test_two_viewers_one_closes_other_keeps_decoding(browser, daemon):
    a = _open_viewer(browser, daemon)
    b = _open_viewer(browser, daemon)
    try:
        a.wait_for_function("viewer.framesDecoded >= 10", timeout=20_000)
        b.wait_for_function("viewer.framesDecoded >= 10", timeout=20_000)
        assert _status(daemon)["webrtc"]["viewers"] == 2
        a.close()
        n = _decoded(b)
        b.wait_for_function(f"viewer.framesDecoded >= {n + 16}", timeout=15_000)  # two more seconds of video
        deadline = time.monotonic() + 15
        while _status(daemon)["webrtc"]["viewers"] != 1:  # the closed one was dropped and cleaned up
            assert time.monotonic() < deadline, _status(daemon)["webrtc"]
            time.sleep(0.3)
        assert b.evaluate("viewer.connection") == "connected"
    finally:
        b.close()
