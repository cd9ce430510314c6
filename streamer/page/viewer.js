// Viewer page: WebRTC playback of the daemon's stream, its status, and prompt changes through POST /control.
// Plain browser JavaScript, no build step. State for tests and curious users: window.viewer.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
  const v = {
    connection: "new", pc: null, channel: null, peer: null, codec: null, whep: null,
    meta: null, status: null, ack: null, error: null,
    framesDecoded: 0, framesPresented: 0, decodedFps: 0, latencyMs: null, jitterMs: null, rttMs: null,
  };
  window.viewer = v;
  let token = params.get("token") || sessionStorage.getItem("streamer-token") || "";
  let retry = null;

  function authHeaders(json) {
    const h = json ? { "Content-Type": "application/json" } : {};
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  function setState(s) {
    v.connection = s;
    $("state").textContent = s;
    $("state").dataset.state = s;
    document.body.dataset.state = s;
  }

  function showError(msg) {
    v.error = msg;
    $("error").textContent = msg || "";
  }

  function waitGathering(pc, ms) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const t = setTimeout(resolve, ms);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
      });
    });
  }

  async function connect() {
    retry = null;
    showError("");
    setState("connecting");
    let cfg = { iceServers: [] };
    try {
      cfg = await (await fetch("webrtc", { headers: authHeaders(false) })).json();
    } catch (e) { /* older daemon: no ICE servers */ }
    if (cfg.token_required && !token) { askToken(); return; }
    const pc = new RTCPeerConnection({ iceServers: cfg.iceServers || [] });
    v.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    const ch = pc.createDataChannel("meta");
    v.channel = ch;
    ch.onmessage = (e) => {
      try { v.meta = JSON.parse(e.data); } catch (err) { return; }
      render();
    };
    pc.ontrack = (e) => {
      const video = $("video");
      video.srcObject = e.streams[0] || new MediaStream([e.track]);
      video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (v.pc !== pc) return;
      setState(pc.connectionState);
      if (pc.connectionState === "failed") reconnect(2000);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc, 3000);
    // WHEP: the offer as application/sdp; 201 Created with the answer (every candidate in it) and a Location
    let r, text;
    try {
      const headers = authHeaders(false);
      headers["Content-Type"] = "application/sdp";
      r = await fetch("whep", { method: "POST", headers, body: pc.localDescription.sdp });
      text = await r.text();
    } catch (e) {
      setState("error"); showError("cannot reach the daemon: " + e); reconnect(3000); return;
    }
    if (r.status !== 201) {
      let msg = text.trim();
      try { msg = JSON.parse(text).error || msg; } catch (e) { /* a plain-text WHEP error */ }
      setState("error"); showError(msg || ("HTTP " + r.status));
      pc.close();
      if (r.status === 401) askToken(); else reconnect(5000);
      return;
    }
    v.peer = r.headers.get("X-Streamer-Peer");
    v.codec = r.headers.get("X-Streamer-Codec");
    v.whep = r.headers.get("Location");
    await pc.setRemoteDescription({ sdp: text, type: "answer" });
  }

  function reconnect(ms) {
    if (retry) return;
    if (v.pc) { try { v.pc.close(); } catch (e) { /* already closed */ } }
    retry = setTimeout(connect, ms);
  }

  function askToken() {
    setState("token needed");
    $("token-box").hidden = false;
    $("token").focus();
  }

  $("token-box").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("streamer-token", token);
    $("token-box").hidden = true;
    connect();
  });

  // --- statistics ------------------------------------------------------------------------------------------
  let prev = null;
  async function pollStats() {
    const pc = v.pc;
    if (!pc || pc.connectionState === "closed") return;
    const rep = await pc.getStats();
    let inbound = null, pair = null;
    rep.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
    if (pair && pair.currentRoundTripTime !== undefined) v.rttMs = pair.currentRoundTripTime * 1000;
    if (!inbound) return;
    const now = performance.now();
    v.framesDecoded = inbound.framesDecoded || 0;
    if (prev) {
      const dt = (now - prev.t) / 1000;
      v.decodedFps = dt > 0 ? (v.framesDecoded - prev.frames) / dt : 0;
      const emitted = (inbound.jitterBufferEmittedCount || 0) - prev.emitted;
      if (emitted > 0) v.jitterMs = 1000 * ((inbound.jitterBufferDelay || 0) - prev.delay) / emitted;
    }
    prev = { t: now, frames: v.framesDecoded, emitted: inbound.jitterBufferEmittedCount || 0,
             delay: inbound.jitterBufferDelay || 0 };
    if (v.meta && v.jitterMs !== null) {
      v.latencyMs = (v.meta.lag_ms || 0) + v.jitterMs + (v.rttMs || 0) / 2;
    }
    render();
  }

  async function pollStatus() {
    try {
      const r = await fetch("status", { cache: "no-store", headers: authHeaders(false) });
      v.status = await r.json();
      render();
    } catch (e) { /* daemon restarting */ }
  }

  function fmt(x, digits) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }

  function render() {
    const s = v.status || {};
    if (s.prompt !== undefined) $("prompt-text").textContent = s.prompt + (s.paused ? "  (paused)" : "");
    const shown = v.meta ? v.meta.block : "–";
    $("block").textContent = `${shown} / ${s.block ?? "–"}`;
    $("fps").textContent = `${fmt(s.fps, 1)} / ${fmt(v.decodedFps, 1)}`;
    $("latency").textContent = v.latencyMs === null ? "–" : `${Math.round(v.latencyMs)} ms`;
    const viewers = s.webrtc ? s.webrtc.viewers : s.viewers;
    $("codec").textContent = `${v.codec || "–"} / ${viewers ?? "–"}`;
    $("pause").textContent = s.paused ? "Resume" : "Pause";
  }

  function countFrames() {
    const video = $("video");
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    const tick = () => { v.framesPresented += 1; video.requestVideoFrameCallback(tick); };
    video.requestVideoFrameCallback(tick);
  }

  // --- control (the daemon's control protocol over POST /control) -----------------------------------------
  async function control(req) {
    const r = await fetch("control", { method: "POST", headers: authHeaders(true), body: JSON.stringify(req) });
    let rep;
    try { rep = await r.json(); } catch (e) { rep = { ok: false, error: "HTTP " + r.status }; }
    if (r.status === 401) askToken();
    return rep;
  }

  $("mode").addEventListener("change", () => { $("blocks").hidden = $("mode").value !== "blend"; });

  $("prompt-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const req = { cmd: "set_prompt", prompt: $("prompt").value, mode: $("mode").value };
    if (req.mode === "blend") req.blocks = parseInt($("blocks").value, 10) || 4;
    const rep = await control(req);
    v.ack = rep;
    const ack = $("ack");
    ack.dataset.ok = String(!!rep.ok);
    ack.textContent = rep.ok
      ? `accepted (${req.mode}): epoch ${rep.epoch}, visible from block ${rep.first_block}`
      : `refused: ${rep.error}`;
    pollStatus();
  });

  $("pause").addEventListener("click", async () => {
    const paused = v.status && v.status.paused;
    v.ack = await control({ cmd: paused ? "resume" : "pause" });
    pollStatus();
  });

  window.addEventListener("pagehide", () => {
    try { if (v.channel && v.channel.readyState === "open") v.channel.send("bye"); } catch (e) { /* closing */ }
    if (v.whep) fetch(v.whep, { method: "DELETE", headers: authHeaders(false), keepalive: true }).catch(() => {});
    if (v.pc) v.pc.close();
  });

  countFrames();
  setInterval(pollStats, 1000);
  setInterval(pollStatus, 1000);
  pollStatus();
  connect().catch((e) => { setState("error"); showError(String(e)); reconnect(3000); });
})();
