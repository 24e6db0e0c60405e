// voiceagent web client: microphone -> WebRTC -> agent; the agent's voice and events back.
// Standard browser APIs only (Chromium, Firefox, Safari); no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  connect: $("connect"), mute: $("mute"), interrupt: $("interrupt"), token: $("token"),
  state: $("state"), notice: $("notice"), level: $("level"), list: $("conversation"),
  form: $("typed"), text: $("text"), send: $("send"), remote: $("remote"),
};

// What a test or a console user can inspect.
const client = window.voiceagent = {
  pc: null, dc: null, localStream: null, remoteStream: null, audio: null, events: [],
  config: { iceServers: [], tokenRequired: false },
};

let userBubble = null;                 // the user's turn being transcribed
const agentBubbles = new Map();        // turn id -> the agent's reply
let muted = false;
let meterTimer = null;

function notice(text, kind = "error") {
  ui.notice.hidden = !text;
  ui.notice.textContent = text || "";
  ui.notice.className = `notice ${kind}`;
}

function setState(text, cls = text) {
  ui.state.textContent = text;
  ui.state.className = `state ${cls}`;
}

function bubble(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.append(document.createTextNode(text));
  ui.list.append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function setText(li, text) { li.firstChild.nodeValue = text; }

function addMeta(li, text) {
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = text;
  li.append(meta);
}

// -- events from the agent -----------------------------------------------------------------

function onEvent(event) {
  client.events.push(event);
  switch (event.type) {
    case "user_transcript":
      if (!userBubble) userBubble = bubble("user partial", "");
      setText(userBubble, event.text);
      if (event.final) {
        if (event.text) userBubble.classList.remove("partial"); else userBubble.remove();
        userBubble = null;
      }
      break;
    case "agent_text": {
      let li = agentBubbles.get(event.turn_id);
      if (!li) agentBubbles.set(event.turn_id, li = bubble("agent", ""));
      const text = event.final ? event.text : `${li.firstChild.nodeValue} ${event.text}`.trim();
      setText(li, event.interrupted ? `${text || "…"} (interrupted)` : text);
      break;
    }
    case "agent_state":
      setState(event.state);
      break;
    case "metrics": {
      const m = event.metrics, li = agentBubbles.get(event.reply_id ?? m.turn_id);
      if (li && m.voice_to_voice != null) {
        const parts = [`${m.voice_to_voice.toFixed(2)} s to first audio`];
        if (m.llm_ttft != null) parts.push(`LLM ${m.llm_ttft.toFixed(2)} s`);
        if (m.tts_ttfa != null) parts.push(`TTS ${m.tts_ttfa.toFixed(2)} s`);
        addMeta(li, parts.join(" · "));
      }
      break;
    }
    case "latency_breakdown": {  // where the wait went, stage by stage
      const li = agentBubbles.get(event.reply_id);
      if (li) {
        const ms = (s) => `${Math.round(s * 1000)}`;
        let text = `end ${ms(event.endpointing)} · stt ${ms(event.stt_final)} · ` +
          `llm ${ms(event.llm_first_token)} · clause ${ms(event.first_clause)} · ` +
          `tts ${ms(event.tts_first_audio)} · out ${ms(event.output)} ms`;
        if (event.draft) text += ` · draft saved ${ms(event.draft_saved)} ms`;
        if (event.drafts_discarded) text += ` · ${event.drafts_discarded} draft(s) dropped`;
        addMeta(li, text);
      }
      break;
    }
    case "error":
      bubble("error", `${event.source}: ${event.message}`);
      break;
    case "session":
      if (event.state === "ended") disconnect(`Session ended (${event.reason}).`, "info");
      break;
  }
}

// -- the microphone level --------------------------------------------------------------------

function startMeter(stream) {
  const ctx = client.audio || (client.audio = new AudioContext());
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  meterTimer = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    const db = 10 * Math.log10(sum / buf.length + 1e-10);
    ui.level.style.width = `${muted ? 0 : Math.max(0, Math.min(100, (db + 60) * 100 / 50))}%`;
  }, 50);
}

// -- connecting ------------------------------------------------------------------------------

async function connect() {
  notice("");
  ui.connect.disabled = true;
  setState("connecting…", "idle");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (err) {
    const denied = err.name === "NotAllowedError" || err.name === "SecurityError";
    notice(denied
      ? "Microphone access was denied. Allow the microphone for this page and connect again."
      : `No microphone available (${err.name}: ${err.message}).`);
    resetControls();
    return;
  }
  client.localStream = stream;
  const pc = client.pc = new RTCPeerConnection({ iceServers: client.config.iceServers });
  stream.getAudioTracks().forEach((track) => pc.addTrack(track, stream));
  const dc = client.dc = pc.createDataChannel("events");
  dc.onmessage = (msg) => {
    try { onEvent(JSON.parse(msg.data)); } catch (err) { console.error("bad event", err); }
  };
  dc.onopen = () => { ui.text.disabled = ui.send.disabled = false; };
  pc.ontrack = (ev) => {
    client.remoteStream = ev.streams[0] || new MediaStream([ev.track]);
    ui.remote.srcObject = client.remoteStream;
    ui.remote.play().catch(() => notice("Click anywhere to hear the agent.", "info"));
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed") {
      disconnect("The connection failed (a firewall or NAT may block it; the server may " +
                 "need a TURN server, see docs/webrtc.md).");
    } else if (pc.connectionState === "connected") {
      setState("listening");
    }
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc);
    const headers = { "Content-Type": "application/json" };
    if (ui.token.value) headers.Authorization = `Bearer ${ui.token.value}`;
    const res = await fetch("/api/offer", {
      method: "POST", headers,
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `the server answered ${res.status}`);
    await pc.setRemoteDescription({ sdp: body.sdp, type: body.type });
  } catch (err) {
    disconnect(`Could not connect: ${err.message}`);
    return;
  }
  startMeter(stream);
  ui.connect.textContent = "Disconnect";
  ui.connect.disabled = false;
  ui.mute.disabled = ui.interrupt.disabled = false;
}

function iceGathered(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); resolve(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
  });
}

function send(message) {
  if (client.dc && client.dc.readyState === "open") client.dc.send(JSON.stringify(message));
}

function resetControls() {
  ui.connect.textContent = "Connect";
  ui.connect.disabled = false;
  ui.mute.disabled = ui.interrupt.disabled = ui.text.disabled = ui.send.disabled = true;
  ui.mute.textContent = "Mute";
  muted = false;
}

function disconnect(message, kind = "error") {
  if (message) notice(message, kind);
  send({ type: "end" });
  clearInterval(meterTimer);
  ui.level.style.width = "0";
  if (client.pc) client.pc.close();
  if (client.localStream) client.localStream.getTracks().forEach((t) => t.stop());
  client.pc = client.dc = client.localStream = null;
  userBubble = null;
  setState("not connected", "idle");
  resetControls();
}

// -- controls --------------------------------------------------------------------------------

ui.connect.onclick = () => (client.pc ? disconnect() : connect());
ui.mute.onclick = () => {
  muted = !muted;
  client.localStream.getAudioTracks().forEach((t) => { t.enabled = !muted; });
  send({ type: "mute", muted });
  ui.mute.textContent = muted ? "Unmute" : "Mute";
};
ui.interrupt.onclick = () => send({ type: "interrupt" });
ui.form.onsubmit = (ev) => {
  ev.preventDefault();
  const text = ui.text.value.trim();
  if (!text) return;
  send({ type: "text", text });
  bubble("user", text);
  ui.text.value = "";
};
window.addEventListener("pagehide", () => send({ type: "end" }));

fetch("/api/config").then((r) => r.json()).then((config) => {
  client.config = config;
  const token = new URLSearchParams(location.search).get("token");
  if (token) ui.token.value = token;
  ui.token.hidden = !config.tokenRequired || Boolean(token);
}).catch(() => notice("The server is not reachable."));
