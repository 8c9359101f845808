/*
 * framecast studio, Avatar tab: a face (an uploaded picture) speaks what the microphone hears, or
 * a dropped audio file, live (docs/PROTOCOL.md, "Audio and video timing").
 *
 * Audio: an AudioWorklet (web/pcm-worklet.js) taps the microphone; the page sends it as 20 ms PCM
 * s16le input messages (FCI1) stamped with their media time (samples sent / rate, from
 * session.started). A dropped file is decoded and sent ahead of the stream's clock instead (up to
 * FILE_LEAD_S: all of a short file at once), so every chunk finds its audio already there, however
 * late a loaded page or network would have delivered it in real time. Video: an fMP4 session whose
 * fragments carry the received audio as a second track; they are appended to a MediaSource
 * SourceBuffer in `segments` mode (timestamps from the fragments), so the <video> element plays
 * face and voice on one clock, in sync.
 *
 * `window.framecastAvatar` exposes the tab's state for tests.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const HEADER_BYTES = 20;
  const PIECE_S = 0.02; // audio message length
  const FILE_LEAD_S = 30; // a dropped file is sent up to this far ahead of media time (the server takes 900 s)
  const MIME = 'video/mp4; codecs="avc1.42C01E, mp4a.40.2"';

  const state = (window.framecastAvatar = {
    status: "idle", // idle | connecting | streaming | done | error
    source: null, // "microphone" | "file"
    session: null, // session.started
    faceDataUrl: null,
    audioRate: null, // the capture's sample rate (declared in session.start.audio)
    audioSentS: 0, // media seconds of audio sent
    audioMessages: 0,
    audioSentAtFirstChunk: null, // media seconds of audio sent when the first chunk arrived
    chunksReceived: 0,
    framesReceived: 0,
    bytesAppended: 0,
    errors: [],
    mseSupported: typeof MediaSource !== "undefined" && MediaSource.isTypeSupported(MIME),
  });

  let ws = null;
  let audio = null; // {context, nodes: [...], stream} (microphone) or {context, nodes: [], file, fileSent, timer} (file)
  let media = null; // {source: MediaSource, buffer: SourceBuffer, queue: [Uint8Array], url}
  let pending = new Float32Array(0); // captured samples not yet sent

  function setStatus(status) {
    state.status = status;
    $("avatar-panel").dataset.status = status;
    $("avatar-status").textContent = status;
    const live = status === "streaming" || status === "connecting";
    $("avatar-mic").disabled = live;
    $("avatar-file").disabled = live;
    $("avatar-stop").disabled = !live;
  }

  function fail(code, message) {
    state.errors.push({ code, message });
    $("avatar-error").textContent = `${code}: ${message}`;
    $("avatar-error").classList.remove("hidden");
  }

  const { readDataUrl, realtimeUrl } = window.framecastShared; // web/app.js: file reading, auth token
  $("avatar-face").addEventListener("change", async () => {
    const file = $("avatar-face").files[0];
    state.faceDataUrl = file ? await readDataUrl(file) : null;
    $("avatar-face-thumb").src = state.faceDataUrl || "";
    $("avatar-face-thumb").classList.toggle("hidden", !state.faceDataUrl);
  });

  // ---------------------------------------------------------------- output: MediaSource

  function openMedia() {
    const source = new MediaSource();
    const video = $("avatar-video");
    media = { source, buffer: null, queue: [], url: URL.createObjectURL(source) };
    video.src = media.url;
    source.addEventListener("sourceopen", () => {
      media.buffer = source.addSourceBuffer(MIME);
      media.buffer.mode = "segments"; // both tracks keep the fragments' media times: in sync
      media.buffer.addEventListener("updateend", pump);
      pump();
    }, { once: true });
    video.addEventListener("waiting", skipGap);
  }

  function pump() {
    if (!media || !media.buffer || media.buffer.updating || !media.queue.length) return;
    const data = media.queue.shift();
    try {
      media.buffer.appendBuffer(data);
      state.bytesAppended += data.byteLength;
    } catch (err) {
      fail("media", err.message);
    }
    const video = $("avatar-video");
    if (video.paused && video.buffered.length) video.play().catch(() => {});
  }

  /** A dropped chunk leaves a gap in both tracks: jump over it instead of waiting forever. */
  function skipGap() {
    const video = $("avatar-video");
    for (let i = 0; i < video.buffered.length; i++) {
      if (video.buffered.start(i) > video.currentTime) {
        video.currentTime = video.buffered.start(i);
        return;
      }
    }
  }

  function onChunk(buffer) {
    const view = new DataView(buffer);
    if (buffer.byteLength < HEADER_BYTES || view.getUint8(4) !== 2) return fail("protocol", "expected an fMP4 chunk");
    state.chunksReceived += 1;
    if (state.chunksReceived === 1) state.audioSentAtFirstChunk = state.audioSentS;
    state.framesReceived += view.getUint16(6, true);
    media.queue.push(new Uint8Array(buffer, HEADER_BYTES, view.getUint32(16, true)));
    pump();
  }

  // ---------------------------------------------------------------- input: audio capture

  /** Send the captured samples in PIECE_S messages, each stamped with its media time. */
  function sendAudio(samples) {
    const rate = audio.context.sampleRate;
    const joined = new Float32Array(pending.length + samples.length);
    joined.set(pending);
    joined.set(samples, pending.length);
    const piece = Math.round(PIECE_S * rate);
    let offset = 0;
    for (; offset + piece <= joined.length; offset += piece) {
      if (!ws || ws.readyState !== WebSocket.OPEN || state.status !== "streaming") continue;
      const pcm = new Int16Array(piece);
      for (let i = 0; i < piece; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(joined[offset + i] * 32768)));
      const message = new ArrayBuffer(HEADER_BYTES + pcm.byteLength);
      const header = new DataView(message);
      "FCI1".split("").forEach((c, i) => header.setUint8(i, c.charCodeAt(0)));
      header.setUint8(4, 1); // kind: audio
      header.setBigUint64(8, BigInt(Math.round(state.audioSentS * 1e6)), true);
      header.setUint32(16, pcm.byteLength, true);
      new Int16Array(message, HEADER_BYTES).set(pcm);
      ws.send(message);
      state.audioSentS += piece / rate;
      state.audioMessages += 1;
    }
    pending = joined.slice(offset);
  }

  async function openAudio(kind, file) {
    const context = new AudioContext();
    context.resume().catch(() => {}); // started from a click, a file choice or a drop: allowed to run
    if (kind === "file") {
      const decoded = await context.decodeAudioData(await file.arrayBuffer()); // at the context's rate
      const mono = new Float32Array(decoded.length);
      for (let c = 0; c < decoded.numberOfChannels; c++) {
        const channel = decoded.getChannelData(c);
        for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / decoded.numberOfChannels;
      }
      audio = { context, nodes: [], stream: null, file: mono, fileSent: 0, timer: null, startedAt: 0 };
      return context.sampleRate;
    }
    await context.audioWorklet.addModule("web/pcm-worklet.js");
    const tap = new AudioWorkletNode(context, "pcm-tap");
    tap.port.onmessage = (event) => audio && state.status === "streaming" && sendAudio(event.data);
    tap.connect(context.destination); // the tap outputs silence; the <video> plays the voice, in sync
    audio = { context, nodes: [tap], stream: null };
    audio.stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false } });
    const mic = context.createMediaStreamSource(audio.stream);
    mic.connect(tap);
    audio.nodes.push(mic);
    return context.sampleRate;
  }

  /** Send the dropped file's samples up to FILE_LEAD_S past the media time elapsed since session.started. */
  function feedFile() {
    if (!audio || !audio.file || state.status !== "streaming") return;
    const rate = audio.context.sampleRate;
    const elapsed = (performance.now() - audio.startedAt) / 1000;
    const until = Math.min(audio.file.length, Math.round((elapsed + FILE_LEAD_S) * rate));
    if (audio.fileSent < until) {
      sendAudio(audio.file.subarray(audio.fileSent, until));
      audio.fileSent = until;
    }
    if (audio.fileSent >= audio.file.length && audio.timer !== null) {
      clearInterval(audio.timer);
      audio.timer = null;
      setTimeout(() => state.status === "streaming" && toastEnd(), Math.max(0, audio.file.length / rate - elapsed) * 1000);
    }
  }

  function closeAudio() {
    if (!audio) return;
    if (audio.nodes.length) audio.nodes[0].port.onmessage = null; // the tap: blocks already in flight are dropped
    if (audio.timer) clearInterval(audio.timer); // a file's feeder
    audio.nodes.forEach((node) => node.disconnect());
    if (audio.stream) audio.stream.getTracks().forEach((track) => track.stop());
    audio.context.close();
    audio = null;
  }

  // ---------------------------------------------------------------- the session

  async function start(kind, file = null) {
    $("avatar-error").classList.add("hidden");
    if (!state.mseSupported) return fail("unsupported", `this browser cannot play ${MIME}`);
    if (kind === "file" && !file) return;
    if (state.status === "streaming" || state.status === "connecting") return;
    Object.assign(state, { source: kind, session: null, audioSentS: 0, audioMessages: 0, audioSentAtFirstChunk: null, chunksReceived: 0, framesReceived: 0, bytesAppended: 0 });
    pending = new Float32Array(0);
    setStatus("connecting");
    let rate;
    try {
      rate = await openAudio(kind, file);
      state.audioRate = rate;
    } catch (err) {
      setStatus("error");
      return fail("audio", err.message);
    }
    openMedia();
    const message = { type: "session.start", prompt: $("avatar-prompt").value.trim() || "a face speaking", format: "fmp4",
                      audio: { format: "pcm_s16le", sample_rate: rate, channels: 1 } };
    if (state.faceDataUrl) message.image = state.faceDataUrl;
    const socket = new WebSocket(await realtimeUrl());
    ws = socket;
    socket.binaryType = "arraybuffer";
    socket.onopen = () => socket.send(JSON.stringify(message));
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") return onChunk(event.data);
      const msg = JSON.parse(event.data);
      if (msg.type === "session.started") {
        state.session = msg;
        setStatus("streaming"); // audio is stamped from here: media time 0
        if (audio.file) {
          audio.startedAt = performance.now();
          audio.timer = setInterval(feedFile, 250);
          feedFile();
        }
      } else if (msg.type === "error") {
        fail(msg.code, msg.message);
      } else if (msg.type === "session.done") {
        setStatus("done");
      }
    };
    socket.onclose = () => {
      if (socket !== ws) return;
      ws = null;
      closeAudio();
      if (state.status !== "error") setStatus("done");
    };
  }

  function toastEnd() {
    $("avatar-status").textContent = "streaming (file ended: listening)";
  }

  function stop() {
    closeAudio();
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "session.stop" }));
    else if (ws) ws.close();
  }

  $("avatar-mic").addEventListener("click", () => start("microphone"));
  $("avatar-file").addEventListener("change", () => start("file", $("avatar-file").files[0]));
  // or drop an audio file (or a face picture) on the stage
  $("avatar-panel").addEventListener("dragover", (event) => event.preventDefault());
  $("avatar-panel").addEventListener("drop", async (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (!file) return;
    if (file.type.startsWith("image/")) {
      state.faceDataUrl = await readDataUrl(file);
      $("avatar-face-thumb").src = state.faceDataUrl;
      $("avatar-face-thumb").classList.remove("hidden");
    } else {
      start("file", file);
    }
  });
  $("avatar-stop").addEventListener("click", stop);
  setStatus("idle");
})();
