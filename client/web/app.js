/*
 * framecast studio: the browser client of a framecast server (no build step, no dependencies).
 *
 * Live tab: WS /v1/realtime. JPEG chunks are decoded with createImageBitmap into a small frame
 * buffer and drawn on the canvas by a requestAnimationFrame clock at the model's fps (not as fast
 * as chunks arrive). Jobs tab: the REST video API (/v1/videos).
 *
 * `window.framecast` exposes the page's state (counters, last applied update, errors) so tests
 * and curious people can watch it; `body[data-status]` mirrors the stream status.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const HEADER_BYTES = 20;
  const MAGIC = "FCS1";
  const API_KEY_STORAGE = "framecast.apiKey";
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const ERROR_HINTS = {
    capacity: "The server is busy (all live slots are taken). Try again in a moment.",
    unauthorized: "The server refused the credentials. Enter a valid API key.",
    bad_request: "The server rejected the request.",
    too_large: "That was too large for the server.",
    unsupported: "The server does not support that.",
    internal: "The server hit an internal error.",
  };

  /** Everything observable about the page (tests read this). */
  const state = (window.framecast = {
    status: "idle", // idle | connecting | streaming | paused | done | lost | error
    session: null, // the session.started event
    chunksReceived: 0,
    framesReceived: 0,
    framesDrawn: 0,
    droppedFrames: 0, // frames the page dropped because its buffer overflowed
    underruns: 0, // times the buffer ran dry when a frame was due
    leadS: 0, // seconds of video received but not yet drawn
    lastSwitchS: null, // last prompt switch: update sent -> its first frame drawn, s
    ttffMs: null, // session.start sent -> first frame drawn
    stats: null, // latest stats event
    updatesSent: [], // event ids of session.update messages sent
    lastAppliedEventId: null,
    lastAppliedChunk: null,
    errors: [], // {code, message} of every error shown
    lastError: null,
    imageDataUrl: null,
    recording: false,
    recordings: 0, // finished recordings (downloads offered)
    lastRecordingBytes: 0,
    jobs: {}, // id -> status
    playedJobId: null,
    model: null, // the first model of GET /v1/models
    apiKeyRequired: false,
  });

  let apiKey = localStorage.getItem(API_KEY_STORAGE) || "";

  // ---------------------------------------------------------------- REST helpers

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  /** (code, message) of an error answer: the server's {"error": {message, type, param, code}}
   *  (OpenAI's shape, docs/PROTOCOL.md), or a proxy's plain text whose code comes from the status. */
  function parseErrorBody(body, status) {
    let code = null;
    let message = null;
    const node = body && typeof body === "object" ? body.error : null;
    if (typeof body === "string") message = body;
    else if (node && typeof node === "object") {
      code = node.code || null;
      message = node.message || null;
    }
    const byStatus = { 400: "bad_request", 401: "unauthorized", 403: "unauthorized", 404: "not_found", 413: "too_large", 422: "bad_request", 503: "capacity" };
    return { code: code || byStatus[status] || (status >= 500 ? "internal" : "bad_request"), message: message || `HTTP ${status}` };
  }

  /** fetch() with the API key; throws ApiError (and shows the key field on 401). */
  async function api(path, { method = "GET", json } = {}) {
    const headers = {};
    if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
    const init = { method, headers };
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError("connection_lost", `Cannot reach the server (${err.message}).`, 0);
    }
    if (!response.ok) {
      let body = null;
      try {
        body = await response.clone().json();
      } catch (_) {
        body = await response.text();
      }
      const { code, message } = parseErrorBody(body, response.status);
      if (response.status === 401) requireApiKey();
      throw new ApiError(code, message, response.status);
    }
    return response;
  }

  function requireApiKey() {
    state.apiKeyRequired = true;
    $("auth-bar").classList.remove("hidden");
  }

  $("api-key-save").addEventListener("click", () => {
    apiKey = $("api-key").value.trim();
    localStorage.setItem(API_KEY_STORAGE, apiKey);
    $("auth-bar").classList.add("hidden");
    hideError();
    loadModel();
    refreshJobs();
  });

  // ---------------------------------------------------------------- status, errors, toasts

  function setStatus(status) {
    state.status = status;
    document.body.dataset.status = status;
    $("status-pill").textContent = status;
    const live = status === "streaming" || status === "paused";
    $("start").disabled = live || status === "connecting";
    $("stop").disabled = !(live || status === "connecting");
    $("pause").disabled = !live;
    $("pause").textContent = status === "paused" ? "Resume" : "Pause";
    $("switch").disabled = !live;
    $("record").disabled = !(live || state.recording);
  }

  function showError(code, message, { reconnect = false } = {}) {
    const entry = { code, message };
    state.errors.push(entry);
    state.lastError = entry;
    const hint = ERROR_HINTS[code];
    $("error-text").textContent = hint ? `${hint} (${code}: ${message})` : `${code}: ${message}`;
    $("error-banner").classList.remove("hidden");
    $("error-banner").dataset.code = code;
    $("reconnect").hidden = !reconnect;
  }

  function hideError() {
    $("error-banner").classList.add("hidden");
    $("reconnect").hidden = true;
  }
  $("error-close").addEventListener("click", hideError);

  let toastTimer = null;
  function toast(text) {
    $("toast").textContent = text;
    $("toast").classList.remove("hidden");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => $("toast").classList.add("hidden"), 2500);
  }

  // ---------------------------------------------------------------- tabs and model info

  document.querySelectorAll(".tab").forEach((tab) =>
    tab.addEventListener("click", () => {
      document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
      ["studio", "jobs", "avatar"].forEach((name) => $(`panel-${name}`).classList.toggle("hidden", tab.dataset.tab !== name));
      if (tab.dataset.tab === "jobs") refreshJobs();
    }),
  );

  async function loadModel() {
    try {
      const body = await (await api("v1/models")).json();
      const model = Array.isArray(body.data) ? body.data[0] : body;
      state.model = model || null;
      if (!model) return;
      const name = model.id || model.name || "model";
      const size = model.width && model.height ? ` · ${model.width}×${model.height}` : "";
      const fps = model.fps ? ` @ ${model.fps} fps` : "";
      $("model-info").textContent = `${name}${size}${fps}`;
    } catch (err) {
      $("model-info").textContent = err.code === "unauthorized" ? "API key needed" : "server unreachable";
    }
  }

  // ---------------------------------------------------------------- image upload

  function readDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  $("image").addEventListener("change", async () => {
    const file = $("image").files[0];
    if (!file) return clearImage();
    state.imageDataUrl = await readDataUrl(file);
    $("image-thumb").src = state.imageDataUrl;
    $("image-preview").classList.remove("hidden");
  });

  function clearImage() {
    state.imageDataUrl = null;
    $("image").value = "";
    $("image-preview").classList.add("hidden");
  }
  $("image-clear").addEventListener("click", clearImage);

  // ---------------------------------------------------------------- frame buffer and pacing

  const canvas = $("screen");
  const ctx = canvas.getContext("2d");
  const player = {
    buffer: [], // {bitmap, index} frames waiting to be drawn, oldest first (index: frame number in the stream)
    maxBuffer: 32, // set from the session: its max lead + 1 s; the server paces the stream below it
    frameMs: 1000 / 16,
    nextDueAt: null, // performance.now() when the next frame is due; null = waiting for frames
    decodeChain: Promise.resolve(), // keeps chunk decoding in arrival order
    drawnTimes: [], // draw timestamps over the last second, for the shown-fps metric
    generation: 0, // bumped per session so late decodes of an old session are dropped
    pendingSwitch: null, // {eventId, sentAt, frame}: frame is set by session.update.applied
  };

  function resetPlayer(session) {
    player.buffer.forEach((f) => f.bitmap.close());
    player.buffer = [];
    player.nextDueAt = null;
    player.drawnTimes = [];
    player.generation += 1;
    player.pendingSwitch = null;
    if (session) {
      const fps = session.fps || 16;
      player.frameMs = 1000 / fps;
      player.maxBuffer = Math.max(8, Math.ceil(fps * ((session.max_lead_s || 1) + 1)));
    }
  }

  /** Parse one binary chunk message; returns {format, first, frameCount, chunkIndex, firstFrameIndex, payload}. */
  function parseChunk(buffer) {
    if (buffer.byteLength < HEADER_BYTES) throw new Error(`chunk of ${buffer.byteLength} bytes is shorter than its header`);
    const view = new DataView(buffer);
    const magic = String.fromCharCode(view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3));
    if (magic !== MAGIC) throw new Error(`bad chunk magic ${JSON.stringify(magic)}`);
    const payloadLength = view.getUint32(16, true);
    if (HEADER_BYTES + payloadLength !== buffer.byteLength) throw new Error("chunk payload length mismatch");
    return {
      format: view.getUint8(4),
      first: (view.getUint8(5) & 1) === 1,
      frameCount: view.getUint16(6, true),
      chunkIndex: view.getUint32(8, true),
      firstFrameIndex: view.getUint32(12, true),
      payload: new Uint8Array(buffer, HEADER_BYTES, payloadLength),
    };
  }

  /** The JPEG blobs of a format-1 payload (frame_count x (u32 length, bytes)). */
  function jpegBlobs(chunk) {
    const view = new DataView(chunk.payload.buffer, chunk.payload.byteOffset, chunk.payload.byteLength);
    const blobs = [];
    let offset = 0;
    for (let i = 0; i < chunk.frameCount; i++) {
      const length = view.getUint32(offset, true);
      offset += 4;
      blobs.push(new Blob([chunk.payload.subarray(offset, offset + length)], { type: "image/jpeg" }));
      offset += length;
    }
    return blobs;
  }

  function onChunk(buffer) {
    let chunk;
    try {
      chunk = parseChunk(buffer);
    } catch (err) {
      showError("protocol", err.message);
      return;
    }
    state.chunksReceived += 1;
    if (chunk.format !== 1) {
      showError("unsupported", "the page only plays JPEG chunks");
      return;
    }
    const generation = player.generation;
    const decoding = Promise.all(jpegBlobs(chunk).map((blob) => createImageBitmap(blob)));
    player.decodeChain = player.decodeChain
      .then(() => decoding)
      .then((bitmaps) => {
        if (generation !== player.generation) return bitmaps.forEach((b) => b.close());
        state.framesReceived += bitmaps.length;
        player.buffer.push(...bitmaps.map((bitmap, i) => ({ bitmap, index: chunk.firstFrameIndex + i })));
        while (player.buffer.length > player.maxBuffer) {
          player.buffer.shift().bitmap.close();
          state.droppedFrames += 1;
        }
        showLead();
      })
      .catch((err) => showError("protocol", `a frame did not decode (${err.message})`));
  }

  /** requestAnimationFrame clock: one buffered frame per frame interval at the model's fps. */
  function tick(now) {
    if (player.nextDueAt === null && player.buffer.length > 0) player.nextDueAt = now;
    if (player.nextDueAt !== null && now >= player.nextDueAt) {
      if (player.buffer.length > 0) {
        drawFrame(player.buffer.shift(), now);
        player.nextDueAt += player.frameMs;
        if (now - player.nextDueAt > 2 * player.frameMs) player.nextDueAt = now; // fell behind: resync
      } else if (state.status === "streaming") {
        state.underruns += 1;
        player.nextDueAt = null; // wait for the next chunk, then restart the clock
      }
    }
    requestAnimationFrame(tick);
  }

  /** Overlay: seconds of video waiting to be drawn. */
  function showLead() {
    state.leadS = player.buffer.length * (player.frameMs / 1000);
    $("m-lead").textContent = `${state.leadS.toFixed(2)} s`;
  }

  function drawFrame(frame, now) {
    ctx.drawImage(frame.bitmap, 0, 0, canvas.width, canvas.height);
    frame.bitmap.close();
    state.framesDrawn += 1;
    showLead();
    const pending = player.pendingSwitch;
    if (pending && pending.frame !== null && frame.index >= pending.frame) {
      state.lastSwitchS = (now - pending.sentAt) / 1000;
      $("m-switch").textContent = `${state.lastSwitchS.toFixed(2)} s`;
      player.pendingSwitch = null;
    }
    if (state.ttffMs === null && startSentAt !== null) {
      state.ttffMs = now - startSentAt;
      $("m-ttff").textContent = `${(state.ttffMs / 1000).toFixed(2)} s`;
    }
    player.drawnTimes.push(now);
    while (player.drawnTimes.length && now - player.drawnTimes[0] > 1000) player.drawnTimes.shift();
    $("m-show-fps").textContent = String(player.drawnTimes.length);
  }
  requestAnimationFrame(tick);

  // ---------------------------------------------------------------- realtime session

  let ws = null;
  let startSentAt = null;
  let userStopped = false;
  let lastStart = null; // the session.start message, for reconnect
  let updateCounter = 0;
  let errorSinceStart = false; // an error event arrived during the current session

  async function realtimeUrl() {
    const url = new URL("v1/realtime", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (apiKey) {
      const body = await (await api("v1/realtime/sessions", { method: "POST", json: {} })).json();
      const token = body.token || (body.client_secret && (body.client_secret.value || body.client_secret));
      url.searchParams.set("token", token);
    }
    return url.toString();
  }

  function startMessage() {
    const prompt = $("prompt").value.trim();
    if (!prompt) throw new ApiError("bad_request", "Type a prompt first.", 0);
    const message = { type: "session.start", prompt, format: "jpeg" };
    const seed = $("seed").value.trim();
    if (seed !== "") message.seed = Number.parseInt(seed, 10);
    if (state.imageDataUrl) message.image = state.imageDataUrl;
    return message;
  }

  async function start(message) {
    hideError();
    resetPlayer(null);
    Object.assign(state, { chunksReceived: 0, framesReceived: 0, framesDrawn: 0, droppedFrames: 0, underruns: 0, ttffMs: null, stats: null, session: null, leadS: 0, lastSwitchS: null });
    ["m-gen-fps", "m-show-fps", "m-ttff", "m-latency", "m-lead", "m-switch"].forEach((id) => ($(id).textContent = "–"));
    $("m-dropped").textContent = "0";
    userStopped = false;
    errorSinceStart = false;
    lastStart = message;
    setStatus("connecting");
    let url;
    try {
      url = await realtimeUrl();
    } catch (err) {
      setStatus("error");
      showError(err.code || "internal", err.message);
      return;
    }
    const socket = new WebSocket(url);
    ws = socket;
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      startSentAt = performance.now();
      socket.send(JSON.stringify(message));
    };
    socket.onmessage = (event) => {
      if (socket !== ws) return;
      if (typeof event.data === "string") onEvent(JSON.parse(event.data));
      else onChunk(event.data);
    };
    socket.onclose = (event) => {
      if (socket !== ws) return;
      ws = null;
      if (state.recording) stopRecording();
      if (userStopped || state.status === "done") {
        setStatus("done");
        return;
      }
      if (errorSinceStart) {
        setStatus("error"); // the server said why (its error is already shown): offer to retry
        $("reconnect").hidden = false;
        return;
      }
      setStatus("lost");
      const reason = event.reason ? `: ${event.reason}` : "";
      showError("connection_lost", `The connection dropped (code ${event.code}${reason}).`, { reconnect: true });
    };
  }

  function onEvent(event) {
    switch (event.type) {
      case "session.started":
        state.session = event;
        canvas.width = event.width;
        canvas.height = event.height;
        canvas.classList.toggle("pixelated", event.width < 256);
        resetPlayer(event);
        setStatus("streaming");
        break;
      case "stats":
        state.stats = event;
        if (typeof event.generated_fps === "number") $("m-gen-fps").textContent = event.generated_fps.toFixed(1);
        if (typeof event.chunk_latency_ms === "number") $("m-latency").textContent = `${Math.round(event.chunk_latency_ms)} ms`;
        updateDropped();
        break;
      case "session.update.applied":
        state.lastAppliedEventId = event.event_id;
        state.lastAppliedChunk = event.chunk_index;
        if (player.pendingSwitch && player.pendingSwitch.eventId === event.event_id && typeof event.media_time_s === "number") {
          player.pendingSwitch.frame = Math.round(event.media_time_s / (player.frameMs / 1000));
        }
        document.body.dataset.lastApplied = event.event_id;
        $("switch-status").textContent = `Prompt applied at chunk ${event.chunk_index}.`;
        toast(`New prompt from chunk ${event.chunk_index}`);
        break;
      case "session.done":
        setStatus("done");
        break;
      case "error":
        errorSinceStart = true;
        showError(event.code || "internal", event.message || "unknown error", { reconnect: false });
        if (state.status === "connecting" && ws) ws.close(); // the start was refused: give up this socket
        break;
      default:
        break; // pong and future events
    }
  }

  /** Overlay: chunks the server dropped for this client, plus frames the page skipped to stay live. */
  function updateDropped() {
    const serverDropped = (state.stats && state.stats.dropped) || 0;
    $("m-dropped").textContent = state.droppedFrames ? `${serverDropped} · ${state.droppedFrames} fr` : String(serverDropped);
  }

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  $("start").addEventListener("click", () => {
    try {
      start(startMessage());
    } catch (err) {
      showError(err.code || "bad_request", err.message);
    }
  });

  $("reconnect").addEventListener("click", () => lastStart && start(lastStart));

  $("stop").addEventListener("click", () => {
    userStopped = true;
    const socket = ws;
    if (!socket) return setStatus("done");
    if (socket.readyState === WebSocket.OPEN) send({ type: "session.stop" });
    else socket.close();
    setTimeout(() => socket.readyState !== WebSocket.CLOSED && socket.close(), 3000);
  });

  $("pause").addEventListener("click", () => {
    if (state.status === "paused") {
      send({ type: "session.resume" });
      setStatus("streaming");
    } else {
      send({ type: "session.pause" });
      setStatus("paused");
    }
  });

  $("switch").addEventListener("click", () => {
    const prompt = $("prompt").value.trim();
    if (!prompt) return showError("bad_request", "Type the new prompt first.");
    updateCounter += 1;
    const eventId = `web-${Date.now().toString(36)}-${updateCounter}`;
    const cut = $("cut").checked;
    const transition = !cut && $("smooth").checked ? Math.max(1, Number.parseInt($("transition-chunks").value, 10) || 1) : 0;
    send({ type: "session.update", prompt, transition_chunks: transition, cut, event_id: eventId });
    state.updatesSent.push(eventId);
    player.pendingSwitch = { eventId, sentAt: performance.now(), frame: null };
    $("switch-status").textContent = cut ? "Cutting to the new scene at the next chunk…"
      : transition ? `Blending into the new prompt over ${transition} chunks…` : "Switching at the next chunk…";
  });

  // ---------------------------------------------------------------- recording

  let recorder = null;

  function recorderMimeType() {
    const candidates = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm", "video/mp4"];
    return candidates.find((type) => window.MediaRecorder && MediaRecorder.isTypeSupported(type)) || "";
  }

  function startRecording() {
    const fps = state.session ? state.session.fps : 16;
    const mimeType = recorderMimeType();
    const parts = [];
    recorder = new MediaRecorder(canvas.captureStream(fps), mimeType ? { mimeType } : {});
    recorder.ondataavailable = (event) => event.data.size && parts.push(event.data);
    recorder.onstop = () => {
      const blob = new Blob(parts, { type: recorder.mimeType || "video/webm" });
      const extension = blob.type.includes("mp4") ? "mp4" : "webm";
      const link = $("record-link");
      if (link.href) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(blob);
      link.download = `framecast-${new Date().toISOString().replace(/[:.]/g, "-")}.${extension}`;
      link.textContent = `Download recording (${(blob.size / 1024).toFixed(0)} KB)`;
      link.classList.remove("hidden");
      state.recordings += 1;
      state.lastRecordingBytes = blob.size;
      link.click();
    };
    recorder.start(500);
    state.recording = true;
    $("record").textContent = "■ Stop recording";
    $("record").classList.add("recording");
    $("rec-badge").classList.remove("hidden");
  }

  function stopRecording() {
    if (recorder && recorder.state !== "inactive") recorder.stop();
    state.recording = false;
    $("record").textContent = "● Record";
    $("record").classList.remove("recording");
    $("rec-badge").classList.add("hidden");
    setStatus(state.status);
  }

  $("record").addEventListener("click", () => (state.recording ? stopRecording() : startRecording()));

  // ---------------------------------------------------------------- jobs

  let jobsTimer = null;
  const jobVideos = {}; // id -> object URL of the downloaded MP4

  function jobStatusText(message) {
    $("job-status").textContent = message;
  }

  $("job-submit").addEventListener("click", async () => {
    const prompt = $("job-prompt").value.trim();
    if (!prompt) return jobStatusText("Type a prompt first.");
    const body = { prompt };
    const seconds = Number.parseFloat($("job-seconds").value);
    if (Number.isFinite(seconds)) body.seconds = seconds;
    const seed = $("job-seed").value.trim();
    if (seed !== "") body.seed = Number.parseInt(seed, 10);
    const file = $("job-image").files[0];
    $("job-submit").disabled = true;
    try {
      if (file) body.image = await readDataUrl(file);
      const video = await (await api("v1/videos", { method: "POST", json: body })).json();
      jobStatusText(`Queued ${video.id}.`);
      await refreshJobs();
    } catch (err) {
      jobStatusText(`${err.code || "error"}: ${err.message}`);
    } finally {
      $("job-submit").disabled = false;
    }
  });

  $("jobs-refresh").addEventListener("click", () => refreshJobs());

  async function refreshJobs() {
    clearTimeout(jobsTimer);
    let videos;
    try {
      videos = (await (await api("v1/videos?limit=30")).json()).data || [];
    } catch (err) {
      jobStatusText(`${err.code || "error"}: ${err.message}`);
      return;
    }
    renderJobs(videos);
    if (videos.some((v) => !TERMINAL.has(v.status))) jobsTimer = setTimeout(refreshJobs, 1000);
  }

  function renderJobs(videos) {
    const list = $("job-list");
    list.replaceChildren();
    if (!videos.length) {
      list.innerHTML = '<li class="empty">No jobs yet.</li>';
      return;
    }
    for (const video of videos) {
      state.jobs[video.id] = video.status;
      const item = document.createElement("li");
      item.className = "job";
      item.dataset.id = video.id;
      item.dataset.status = video.status;
      const progress = Math.round(video.status === "completed" ? 100 : video.progress || 0);
      const error = video.error ? ` · ${typeof video.error === "string" ? video.error : video.error.message || video.error.code}` : "";
      const prompt = document.createElement("div");
      prompt.className = "job-prompt";
      prompt.textContent = video.prompt;
      prompt.title = video.prompt;
      const meta = document.createElement("div");
      meta.className = "job-meta";
      meta.innerHTML = `<span class="status-tag"></span> · ${progress}% · ${video.seconds ?? "?"} s · ${video.id}`;
      meta.querySelector(".status-tag").textContent = video.status.replace("_", " ");
      meta.append(error);
      const actions = document.createElement("div");
      actions.className = "job-actions";
      if (video.status === "completed") {
        actions.append(button("Play", "play", () => playJob(video)), button("Download", "download", () => downloadJob(video)));
      }
      actions.append(button(TERMINAL.has(video.status) ? "Delete" : "Cancel", "delete", () => deleteJob(video)));
      const bar = document.createElement("div");
      bar.className = "job-bar";
      bar.innerHTML = `<div style="width:${progress}%"></div>`;
      item.append(prompt, actions, meta, bar);
      list.append(item);
    }
  }

  function button(label, action, onClick) {
    const b = document.createElement("button");
    b.className = "btn small";
    b.textContent = label;
    b.dataset.action = action;
    b.addEventListener("click", onClick);
    return b;
  }

  async function jobVideoUrl(video) {
    if (!jobVideos[video.id]) {
      const blob = await (await api(`v1/videos/${encodeURIComponent(video.id)}/content`)).blob();
      jobVideos[video.id] = URL.createObjectURL(new Blob([blob], { type: "video/mp4" }));
    }
    return jobVideos[video.id];
  }

  async function playJob(video) {
    try {
      const el = $("player-video");
      el.src = await jobVideoUrl(video);
      $("player").classList.remove("hidden");
      $("player-caption").textContent = video.prompt;
      state.playedJobId = video.id;
      await el.play().catch(() => {}); // autoplay may be refused; controls remain
    } catch (err) {
      jobStatusText(`${err.code || "error"}: ${err.message}`);
    }
  }

  async function downloadJob(video) {
    try {
      const link = document.createElement("a");
      link.href = await jobVideoUrl(video);
      link.download = `${video.id}.mp4`;
      link.click();
    } catch (err) {
      jobStatusText(`${err.code || "error"}: ${err.message}`);
    }
  }

  async function deleteJob(video) {
    try {
      await api(`v1/videos/${encodeURIComponent(video.id)}`, { method: "DELETE" });
      if (jobVideos[video.id]) URL.revokeObjectURL(jobVideos[video.id]);
      delete jobVideos[video.id];
      delete state.jobs[video.id];
      await refreshJobs();
    } catch (err) {
      jobStatusText(`${err.code || "error"}: ${err.message}`);
    }
  }

  // helpers the Avatar tab (web/avatar.js) shares: reading a picture, the socket URL (with a token)
  window.framecastShared = { readDataUrl, realtimeUrl };

  // ---------------------------------------------------------------- boot

  if (apiKey) $("api-key").value = apiKey;
  setStatus("idle");
  loadModel();
})();
