// vidmem web page: share a camera or screen over WebRTC, upload videos, ask questions, watch the memory.
// Plain ES2020, no dependencies. Server data only ever reaches the DOM through textContent.

const $ = (id) => document.getElementById(id);

const state = {
  selected: null, // stream_id
  streams: [], // last GET /v1/streams
  memKey: null, // "stream_id@version" of the rendered timeline
  memPeak: 1, // the most tokens one slot of the selected stream has cost: bars shrink as it compresses
  share: null, // {kind, media, pc, streamId, timer, released}: set from the click on, before the media opens
  ask: null, // AbortController of the answer being read
  jobTimer: null,
  jobGen: 0, // bumped by each upload: a job poller of an older one stops
  pollErrors: new Map(), // poller -> message last shown (so a dead server is not re-announced every tick)
};

// ---------------------------------------------------------------------------------------------- errors

const apiError = (code, message, status = 0) => Object.assign(new Error(message), { code, status });

function showError(err) {
  const code = err.code || "error";
  $("error-message").textContent = `${err.message || String(err)} (${code})`;
  $("error").dataset.code = code;
  $("error").hidden = false;
}

function clearError() {
  $("error-message").textContent = "";
  delete $("error").dataset.code;
  $("error").hidden = true;
}

// A failure of a background poller: shown once until that poller succeeds again.
function pollFailed(poller, err) {
  const msg = `${err.code}: ${err.message}`;
  if (state.pollErrors.get(poller) === msg) return;
  state.pollErrors.set(poller, msg);
  showError(err);
}

const pollOk = (poller) => state.pollErrors.delete(poller);

// A 429 says when to come back: the message says it too.
function withRetryAfter(message, status, retryAfter) {
  if (status !== 429 || !retryAfter) return message;
  return /^\d+$/.test(retryAfter) ? `${message} (retry in ${retryAfter} s)` : `${message} (retry after ${retryAfter})`;
}

// ------------------------------------------------------------------------------------------------ auth

// A distributed server wants an API key (`Authorization: Bearer vmk_...`) on every /v1 call; the embedded
// one needs none and ignores one. The page learns which from the first 401: no endpoint tells it.
//
// The key is kept in sessionStorage, not localStorage: it leaves with the tab. Closing the tab forgets it;
// other tabs, and whoever uses this browser profile next, never see it; it is not left on disk for months.
// A key speaks for its whole tenant, so it should live no longer than the session that typed it in.
const KEY_ITEM = "vidmem.apiKey";

const auth = {
  key: readKey(),
  prompted: false, // the field was focused for the current refusal: once, not on every poll's 401
};

function readKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM) || "";
  } catch {
    return ""; // storage disabled: the key lasts until the page reloads
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
  } catch {} // storage disabled: the key lasts until the page reloads
}

const authHeaders = (key = auth.key) => (key ? { authorization: `Bearer ${key}` } : {});

function setKeyHint(s, text) {
  const hint = $("api-key-hint");
  hint.dataset.state = s;
  hint.textContent = text;
  $("api-key").setAttribute("aria-invalid", String(s === "refused"));
}

// A 401 to a request sent with `sentKey`: ask for a key (or a valid one) and focus the field, once per
// refusal. Returns the error to show in its place.
function unauthorized(err, sentKey) {
  const where = "enter it in the “API key” field at the top and press Enter";
  const e = sentKey
    ? apiError("unauthorized", `the server refused this API key (${err.message}): ${where}`, 401)
    : apiError("unauthorized", `this server needs an API key: ${where}`, 401);
  setKeyHint(sentKey ? "refused" : "needed", sentKey
    ? "Key refused: check it, then press Enter."
    : "This server needs an API key: paste it here, then press Enter.");
  if (!auth.prompted) {
    auth.prompted = true;
    $("api-key").focus();
  }
  return e;
}

function authorized() {
  auth.prompted = false;
  if ($("api-key-hint").dataset.state !== "ok") setKeyHint("ok", "");
}

function useKey(ev) {
  ev.preventDefault();
  const key = $("api-key").value.trim();
  if (/[^\x21-\x7e]/.test(key)) {
    return showError(apiError("validation_error", "an API key has no spaces or special characters (vmk_…)"));
  }
  $("api-key").value = key;
  const changed = key !== auth.key;
  auth.key = key;
  storeKey(key);
  auth.prompted = false;
  state.pollErrors.clear(); // a refusal of the new key is shown, even when it reads like the last one
  clearError();
  setKeyHint(key ? "checking" : "", key ? "checking the key…" : "");
  if (changed) forgetTenant();
  // Retry the polling now (the stream list, the memory, a share's status), not at the next tick.
  refreshStreams();
  refreshMemory();
  if (state.share) pollLive(state.share);
}

// Another key may be another tenant's: nothing of the previous one stays on the page.
function forgetTenant() {
  state.jobGen++; // a job poller of the previous key stops
  clearTimeout(state.jobTimer);
  $("upload-progress").value = 0;
  $("job-progress").value = 0;
  setUploadStatus("", "\u00a0");
  state.streams = [];
  selectStream(null);
  renderStreams();
  $("streams").dataset.state = "loading";
}

// ------------------------------------------------------------------------------------------------- api

async function errorFrom(res) {
  let code = `http_${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body = await res.json();
    code = body?.error?.code ?? code;
    message = body?.error?.message ?? message;
  } catch {
    // not JSON: keep the status line
  }
  return apiError(code, withRetryAfter(message, res.status, res.headers.get("retry-after")), res.status);
}

// fetch with the API key, that throws an Error with code/message on a network failure or a non-2xx answer.
async function request(method, path, body, signal) {
  const sentKey = auth.key;
  const init = { method, signal, headers: authHeaders(sentKey) };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw apiError("network_error", `cannot reach the server (${e.message})`);
  }
  if (res.status === 401) {
    if (sentKey !== auth.key) return request(method, path, body, signal); // a key was entered meanwhile
    throw unauthorized(await errorFrom(res), sentKey);
  }
  if (!res.ok) throw await errorFrom(res);
  if (sentKey === auth.key) authorized();
  return res;
}

async function api(method, path, body) {
  const res = await request(method, path, body);
  return res.status === 204 ? null : res.json();
}

const enc = encodeURIComponent;

// ------------------------------------------------------------------------------------------ formatting

function fmtTime(s) {
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const ss = String(t % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

const fmtSpan = (t0, t1) => (fmtTime(t0) === fmtTime(t1) ? fmtTime(t0) : `${fmtTime(t0)}–${fmtTime(t1)}`);

const fmtSecs = (s) => (typeof s === "number" ? `${s.toFixed(s < 10 ? 2 : 1)} s` : "–");
const streamLabel = (s) => s.name || s.source || s.stream_id;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ------------------------------------------------------------------------------------------- selection

function selectStream(id) {
  if (state.selected === id) return;
  state.selected = id;
  state.memKey = null;
  state.memPeak = 1;
  state.ask?.abort();
  $("answer").textContent = "";
  $("answer-meta").textContent = "";
  setAnswerState("idle");
  releaseThumbs($("timeline"));
  $("timeline").replaceChildren();
  $("memory-summary").textContent = id ? "loading memory…" : "";
  renderSelected();
  renderStreams();
  if (id) refreshMemory();
}

function renderSelected() {
  const box = $("selected-stream");
  const s = state.streams.find((x) => x.stream_id === state.selected);
  box.dataset.streamId = state.selected || "";
  if (!state.selected) {
    box.textContent = "None: pick a stream on the left.";
    $("selected-info").textContent = "";
    return;
  }
  box.textContent = s ? streamLabel(s) : state.selected;
  $("selected-info").textContent = s
    ? `${s.kind} · ${stateText(s)} · ${s.source || ""} · id ${s.stream_id}${s.last_error ? ` · ${s.last_error}` : ""}`
    : `id ${state.selected}`;
}

// --------------------------------------------------------------------------------------------- streams

// A stream's state; an upload's or URL's follows its job (README, "Stream states"), which is named too.
const stateText = (s) => (s.job_state ? `${s.state} (job ${s.job_state})` : s.state);

function streamItem(s) {
  const li = el("li", "stream");
  li.dataset.streamId = s.stream_id;
  li.dataset.kind = s.kind;
  li.dataset.state = s.state;
  li.tabIndex = 0;
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", String(s.stream_id === state.selected));
  const head = el("div", "stream-head");
  const badge = el("span", "badge state", s.state);
  badge.title = stateText(s);
  head.append(el("span", "stream-name", streamLabel(s)), el("span", "badge kind", s.kind), badge);
  const used = s.budget ? Math.min(1, s.tokens_used / s.budget) : 0;
  const meter = el("div", "meter");
  meter.append(el("div", "meter-fill"));
  meter.firstChild.style.width = `${(used * 100).toFixed(1)}%`;
  const nums = el("div", "stream-nums", `${s.frames_encoded} frames · ${s.tokens_used} / ${s.budget} tok · ${s.slots} slots`);
  li.append(head, nums, meter);
  return li;
}

function renderStreams() {
  const ul = $("streams");
  const focused = ul.contains(document.activeElement) ? document.activeElement.dataset.streamId : null;
  ul.replaceChildren(...state.streams.map(streamItem));
  if (focused) ul.querySelector(`li[data-stream-id="${CSS.escape(focused)}"]`)?.focus();
  $("streams-empty").hidden = state.streams.length > 0;
}

// One request at a time (a slow server must not pile them up): a call while one is out gets that one.
function refreshStreams() {
  if (!state.streamsBusy) state.streamsBusy = loadStreams().finally(() => (state.streamsBusy = null));
  return state.streamsBusy;
}

async function loadStreams() {
  const key = auth.key;
  let streams;
  try {
    ({ streams } = await api("GET", "/v1/streams"));
  } catch (e) {
    if (key !== auth.key) return loadStreams(); // another key (tenant) took over meanwhile: ask with it
    $("streams").dataset.state = "error";
    return pollFailed("streams", e);
  }
  if (key !== auth.key) return loadStreams();
  pollOk("streams");
  $("streams").dataset.state = "ok";
  state.streams = streams.sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0)); // newest first
  renderStreams();
  renderSelected();
}

function onStreamPick(ev) {
  const li = ev.target.closest("li[data-stream-id]");
  if (!li) return;
  if (ev.type === "keydown" && ev.key !== "Enter" && ev.key !== " ") return;
  ev.preventDefault();
  li.focus();
  selectStream(li.dataset.streamId);
}

async function addCamera(ev) {
  ev.preventDefault();
  const url = $("camera-url").value.trim();
  if (!url) return showError(apiError("validation_error", "enter the camera's URL"));
  const body = { url, name: $("camera-name").value.trim() };
  clearError();
  $("add-camera").disabled = true;
  $("camera-status").textContent = "checking the camera…";
  try {
    const view = await api("POST", "/v1/streams", body);
    $("camera-status").textContent = `added ${streamLabel(view)} (${view.state})`;
    $("camera-url").value = "";
    $("camera-name").value = "";
    await refreshStreams();
    selectStream(view.stream_id);
  } catch (e) {
    $("camera-status").textContent = "";
    showError(e);
  } finally {
    $("add-camera").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------- memory

// <img src> cannot send the API key, so a thumbnail is fetched (with it) into a blob: URL, once its slot
// nears the view (as loading=lazy did). Each img owns its object URL: revoked when replaced or removed,
// so a timeline refreshing for hours does not pile up images.
const thumbs = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    thumbs.unobserve(e.target);
    loadThumb(e.target);
  }
}, { rootMargin: "1000px" });

function setThumb(img, url) {
  if (img.dataset.src === url) return;
  img.dataset.src = url;
  thumbs.observe(img);
}

async function loadThumb(img) {
  const url = img.dataset.src;
  if (!url || img.dataset.shown === url || img.dataset.loading === url) return;
  img.dataset.loading = url;
  let blob;
  try {
    blob = await (await request("GET", url)).blob();
  } catch (e) {
    // A 401 has asked for a key already; a slot merged away (404) is gone with the next refresh.
    if (img.dataset.src === url && e.status !== 404) img.dataset.failed = "1";
    return;
  } finally {
    if (img.dataset.loading === url) delete img.dataset.loading;
  }
  if (img.dataset.src !== url || !img.isConnected) return; // replaced or removed meanwhile
  const old = img.src;
  img.src = URL.createObjectURL(blob);
  img.dataset.shown = url;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

// Thumbnails that failed (a network hiccup, a missing key) load again at the next refresh.
function retryThumbs() {
  for (const img of $("timeline").querySelectorAll("img.thumb[data-failed]")) {
    delete img.dataset.failed;
    thumbs.observe(img);
  }
}

// The thumbnails under `root`, about to leave the page, give their object URLs back.
function releaseThumbs(root) {
  for (const img of root.querySelectorAll("img.thumb")) {
    thumbs.unobserve(img);
    delete img.dataset.src; // a load still on its way drops what it gets
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.removeAttribute("src");
  }
}

function slotElement(slot) {
  const div = el("div", "slot");
  const img = el("img", "thumb");
  img.alt = "";
  const bar = el("div", "bar");
  bar.append(el("div", "bar-fill"));
  div.append(img, bar, el("div", "span"), el("div", "tokens"));
  return div;
}

function updateSlot(div, slot, maxTokens) {
  div.dataset.slotId = slot.slot_id;
  div.dataset.tokens = slot.tokens;
  div.dataset.side = slot.side;
  const img = div.querySelector(".thumb");
  setThumb(img, slot.thumbnail);
  div.querySelector(".bar-fill").style.height = `${Math.max(2, (100 * slot.tokens) / maxTokens)}%`;
  div.querySelector(".span").textContent = fmtSpan(slot.t0, slot.t1);
  div.querySelector(".tokens").textContent = `${slot.side}×${slot.side} · ${slot.tokens} tok`;
  div.title = `slot ${slot.slot_id}: ${slot.t0.toFixed(1)}–${slot.t1.toFixed(1)} s, ${slot.frames} frame(s), ` +
    `${slot.side}×${slot.side} grid, ${slot.tokens} tokens`;
  div.classList.toggle("merged", slot.frames > 1);
}

function renderMemory(mem) {
  const grid = mem.side ? `${mem.side}×${mem.side}` : "–";
  $("memory-summary").textContent = mem.slots.length
    ? `${mem.tokens_used} / ${mem.budget} tokens · ${mem.slots.length} slots · ${mem.frames} frames · grid ${grid}`
    : `0 / ${mem.budget} tokens · no frames encoded yet`;
  const box = $("timeline");
  if (!mem.slots.length) {
    releaseThumbs(box);
    box.replaceChildren(el("p", "empty", "No frames encoded yet: the memory fills as frames arrive."));
    return;
  }
  const old = new Map([...box.querySelectorAll(".slot")].map((d) => [d.dataset.slotId, d]));
  const maxTokens = (state.memPeak = Math.max(state.memPeak, ...mem.slots.map((s) => s.tokens)));
  const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 8; // follow the newest slots
  const items = mem.slots.map((slot) => {
    const div = old.get(String(slot.slot_id)) || slotElement(slot);
    updateSlot(div, slot, maxTokens);
    return div;
  });
  const kept = new Set(items);
  for (const div of old.values()) if (!kept.has(div)) releaseThumbs(div);
  box.replaceChildren(...items);
  if (stick) box.scrollTop = box.scrollHeight;
}

async function refreshMemory() {
  const id = state.selected;
  if (!id || state.memBusy === id) return; // one request at a time (a slow server must not pile them up)
  state.memBusy = id;
  try {
    const mem = await api("GET", `/v1/streams/${enc(id)}/memory`);
    pollOk("memory");
    const key = `${id}@${mem.version}`;
    if (state.selected !== id) return;
    retryThumbs();
    if (state.memKey === key) return;
    state.memKey = key;
    renderMemory(mem);
  } catch (e) {
    if (state.selected !== id) return;
    if (e.status === 404) {
      selectStream(null);
      $("memory-summary").textContent = "That stream was deleted.";
      refreshStreams();
    } else {
      pollFailed("memory", e);
    }
  } finally {
    if (state.memBusy === id) state.memBusy = null;
  }
}

// ------------------------------------------------------------------------------------------------- ask

function setAnswerState(s) {
  const pill = $("answer-status");
  pill.dataset.state = s;
  pill.textContent = { idle: "", streaming: "streaming…", done: "done", error: "error" }[s] ?? s;
}

function parseSseBlock(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const c = line.indexOf(":");
    const field = c < 0 ? line : line.slice(0, c);
    let value = c < 0 ? "" : line.slice(c + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") kind = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return { kind, data: JSON.parse(data.join("\n")) };
}

// Server-Sent Events read from a fetch body (EventSource cannot POST).
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf = (buf + value).replace(/\r\n/g, "\n");
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = parseSseBlock(buf.slice(0, i));
      buf = buf.slice(i + 2);
      if (ev) yield ev;
    }
  }
  const last = buf.trim() && parseSseBlock(buf);
  if (last) yield last;
}

function answerMeta(d) {
  return `${d.slots_used} slots · ${d.tokens_used}/${d.budget} tokens · prompt ${d.prompt_tokens} · ` +
    `first token ${fmtSecs(d.ttft_s)} · ${fmtSecs(d.latency_s)} · memory v${d.memory_version}`;
}

function askBody() {
  const body = { question: $("question").value.trim(), stream: true };
  for (const k of ["since", "until"]) {
    const v = $(k).value.trim();
    if (v) body[k] = v;
  }
  return body;
}

async function ask() {
  const id = state.selected;
  if (!id) return showError(apiError("no_stream", "select a stream first"));
  const body = askBody();
  if (!body.question) return showError(apiError("validation_error", "type a question first"));
  clearError();
  state.ask?.abort();
  const ctl = new AbortController();
  state.ask = ctl;
  const out = $("answer");
  out.textContent = "";
  $("answer-meta").textContent = "";
  setAnswerState("streaming");
  let final = null;
  try {
    const res = await request("POST", `/v1/streams/${enc(id)}/ask`, body, ctl.signal);
    for await (const ev of sseEvents(res.body)) {
      if (ev.kind === "piece") out.textContent += ev.data.text;
      else if (ev.kind === "restart") out.textContent = "";
      else if (ev.kind === "done") {
        if (typeof ev.data.answer === "string") out.textContent = ev.data.answer;
        $("answer-meta").textContent = answerMeta(ev.data);
        final = "done";
      } else if (ev.kind === "error") {
        showError(apiError(ev.data.code, ev.data.message));
        final = "error";
      }
    }
    if (!final) throw apiError("answer_failed", "the answer ended without a result");
    setAnswerState(final);
  } catch (e) {
    if (e.name === "AbortError") return; // another question or another stream took over
    if (state.ask === ctl) setAnswerState("error");
    showError(e.code ? e : apiError("network_error", `the answer was cut off (${e.message})`));
  } finally {
    if (state.ask === ctl) state.ask = null;
  }
}

// ---------------------------------------------------------------------------------------------- upload

function setUploadStatus(s, text) {
  $("upload-status").dataset.state = s;
  $("upload-status").textContent = text;
}

function xhrError(xhr) {
  let e = null;
  try {
    e = JSON.parse(xhr.responseText).error;
  } catch {} // not JSON: keep the status line
  const wait = xhr.getResponseHeader("retry-after");
  if (e?.message) return apiError(e.code, withRetryAfter(e.message, xhr.status, wait), xhr.status);
  return apiError(`http_${xhr.status}`, xhr.statusText || `HTTP ${xhr.status}`, xhr.status);
}

function upload() {
  const file = $("upload-file").files[0];
  if (!file) return showError(apiError("no_file", "choose a video file first"));
  const form = new FormData();
  form.append("file", file);
  for (const k of ["fps", "budget"]) {
    const v = $(`upload-${k}`).value.trim();
    if (v) form.append(k, v);
  }
  clearError();
  clearTimeout(state.jobTimer);
  const gen = ++state.jobGen;
  $("upload-progress").value = 0;
  $("job-progress").value = 0;
  $("upload").disabled = true;
  setUploadStatus("uploading", `uploading ${file.name}…`);
  const sentKey = auth.key;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/videos");
  for (const [k, v] of Object.entries(authHeaders(sentKey))) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    $("upload-progress").value = e.loaded / e.total;
    setUploadStatus("uploading", `uploading ${file.name}… ${Math.round((100 * e.loaded) / e.total)}%`);
  };
  const fail = (err) => {
    $("upload").disabled = false;
    setUploadStatus("failed", `upload failed: ${err.message}`);
    showError(err);
  };
  xhr.onerror = () => fail(apiError("network_error", "the upload was cut off (server unreachable, or the file too large)"));
  xhr.onload = () => {
    if (xhr.status === 401) return fail(unauthorized(xhrError(xhr), sentKey));
    if (xhr.status < 200 || xhr.status >= 300) return fail(xhrError(xhr));
    if (sentKey === auth.key) authorized();
    $("upload").disabled = false;
    $("upload-progress").value = 1;
    const { job_id, stream_id } = JSON.parse(xhr.responseText);
    setUploadStatus("queued", "uploaded; queued for encoding…");
    refreshStreams().then(() => selectStream(stream_id));
    pollJob(job_id, stream_id, gen);
  };
  xhr.send(form);
}

function jobText(job) {
  const pct = Math.round(100 * job.progress);
  if (job.state === "done") return `done · ${job.frames_encoded} frames encoded`;
  if (job.state === "failed") return `failed: ${job.error || "unknown error"}`;
  if (job.state === "queued") return "queued for encoding…";
  return `encoding… ${pct}% · ${job.frames_encoded} of ${job.frames_sampled} sampled frames encoded`;
}

async function pollJob(jobId, streamId, gen) {
  let job;
  try {
    job = await api("GET", `/v1/jobs/${enc(jobId)}`);
    if (gen !== state.jobGen) return; // a newer upload took over
    pollOk("job");
  } catch (e) {
    if (gen !== state.jobGen) return;
    pollFailed("job", e);
    if (e.status === 404) return setUploadStatus("failed", `job ${jobId} is gone`);
    state.jobTimer = setTimeout(() => pollJob(jobId, streamId, gen), 2000);
    return;
  }
  $("job-progress").value = job.state === "done" ? 1 : job.progress;
  setUploadStatus(job.state, jobText(job));
  if (job.state === "failed") return showError(apiError("job_failed", job.error || "the video job failed"));
  if (job.state === "done") {
    // Select the new stream, unless the user picked another one while it was encoding.
    if (!state.selected || state.selected === streamId) selectStream(streamId);
    refreshMemory();
    return refreshStreams();
  }
  state.jobTimer = setTimeout(() => pollJob(jobId, streamId, gen), 500);
}

// --------------------------------------------------------------------------------------------- sharing

// data-state is the peer connection's connectionState; note says what happens before it has one.
function setShareStatus(share, note) {
  const box = $("share-status");
  const s = share?.pc?.connectionState ?? (share ? "new" : "closed");
  box.dataset.state = s;
  box.dataset.streamId = share?.streamId || "";
  const id = share?.streamId ? ` · stream ${share.streamId}` : "";
  box.textContent = share ? `${share.kind}: ${note || s}${id}` : note || "Not sharing.";
}

function setSharing(on) {
  $("share-camera").disabled = on;
  $("share-screen").disabled = on;
  $("stop-share").disabled = !on;
  $("live").hidden = !on;
  $("preview").hidden = !on;
  if (!on) $("live-error").hidden = true;
}

function mediaError(e, kind) {
  const denied = e.name === "NotAllowedError" || e.name === "SecurityError";
  if (!navigator.mediaDevices) return apiError("media_unavailable", "this page needs https or localhost to use a camera or screen");
  if (denied) return apiError("permission_denied", `access to the ${kind} was denied`);
  if (e.name === "NotFoundError") return apiError("no_device", `no ${kind} found`);
  return apiError(e.name || "media_error", `cannot open the ${kind}: ${e.message}`);
}

// Vanilla ICE: the server takes all candidates in the offer, so wait for gathering (3 s at most).
function iceGathered(pc, ms = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

async function openMedia(kind) {
  const md = navigator.mediaDevices;
  if (kind === "screen") return md.getDisplayMedia({ video: true });
  return md.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
}

async function startShare(kind) {
  stopShare(); // defensive: the buttons are disabled while a share starts or runs
  clearError();
  const share = { kind, media: null, pc: null, streamId: null, answered: false, timer: null };
  state.share = share; // before the first await, so that a second click or a Stop sees this share
  setSharing(true);
  setShareStatus(share, `opening the ${kind}…`);
  // After each await this share may have been stopped (Stop, the browser's UI) or replaced: then what it
  // acquired since is released too (stopShare may be called again for the same share).
  const gone = () => state.share !== share;
  try {
    share.media = await openMedia(kind);
  } catch (e) {
    if (!gone()) showError(mediaError(e, kind));
    return stopShare(share);
  }
  if (gone()) return stopShare(share);
  $("preview").srcObject = share.media;
  const track = share.media.getVideoTracks()[0];
  track.addEventListener("ended", () => stopShare(share)); // stopped from the browser's own UI
  try {
    const cfg = await api("GET", "/v1/webrtc/config");
    if (gone()) return stopShare(share);
    const pc = new RTCPeerConnection({ iceServers: cfg.ice_servers || [] });
    share.pc = pc;
    pc.addEventListener("connectionstatechange", () => onPeerState(share));
    pc.addTransceiver(track, { direction: "sendonly" });
    await pc.setLocalDescription(await pc.createOffer());
    if (gone()) return stopShare(share);
    setShareStatus(share, "gathering ICE candidates…");
    await iceGathered(pc);
    if (gone()) return stopShare(share);
    const ans = await api("POST", "/v1/webrtc/offer", { sdp: pc.localDescription.sdp, type: "offer", name: kind });
    share.streamId = ans.stream_id;
    if (gone()) return stopShare(share); // DELETEs the stream just made (no connection to hang up)
    await pc.setRemoteDescription({ type: "answer", sdp: ans.sdp });
    share.answered = true;
    if (gone()) return stopShare(share);
    setShareStatus(share);
    await refreshStreams();
    if (gone()) return stopShare(share);
    selectStream(share.streamId);
    share.timer = setInterval(() => pollLive(share), 1000);
    pollLive(share);
  } catch (e) {
    if (!gone()) showError(e.code ? e : apiError("webrtc_error", `WebRTC setup failed: ${e.message}`));
    stopShare(share);
  }
}

function onPeerState(share) {
  if (state.share !== share) return;
  setShareStatus(share);
  if (share.pc.connectionState === "failed") {
    showError(apiError("webrtc_failed", "the WebRTC connection failed (no network path to the server?)"));
    stopShare(share);
  }
}

async function pollLive(share) {
  if (state.share !== share || !share.streamId) return;
  try {
    const s = await api("GET", `/v1/streams/${enc(share.streamId)}`);
    pollOk("live");
    if (state.share !== share) return;
    if (s.state === "done" || s.state === "stopped") {
      // The server ended it (its watchdog, a DELETE from elsewhere, a shutdown): end the share here too.
      stopShare(share, `The server ended stream ${share.streamId} (${s.state}).`);
      if (s.last_error) showError(apiError("stream_ended", `the server ended the stream: ${s.last_error}`));
      return;
    }
    $("live-state").textContent = s.state;
    $("live-frames").textContent = `${s.frames_encoded} / ${s.frames_sampled ?? "–"}`;
    $("live-tokens").textContent = `${s.tokens_used} / ${s.budget}`;
    const res = Array.isArray(s.resolution) ? `${s.resolution[0]}×${s.resolution[1]}` : s.resolution;
    $("live-resolution-row").hidden = !res;
    $("live-resolution").textContent = res || "";
    $("live-error").hidden = !s.last_error;
    $("live-error").textContent = s.last_error || "";
  } catch (e) {
    if (e.status === 404 && state.share === share) return stopShare(share, `Stream ${share.streamId} was deleted.`);
    pollFailed("live", e);
  }
}

// Ends a share by hanging up: stops its media and closes its pc; the server then ends the stream, state
// "done" (README, "Stream states"). A stream whose answer was never applied has no connection to hang up:
// that one is DELETEd ("stopped"). `ended` says that the server ended it already. Safe to call again: it
// releases what the share acquired since, and DELETEs at most once.
async function stopShare(share = state.share, ended = null) {
  if (!share) return;
  clearInterval(share.timer);
  share.media?.getTracks().forEach((t) => t.stop());
  share.pc?.close();
  if (state.share === share) {
    state.share = null;
    $("preview").srcObject = null;
    setSharing(false);
    const kept = share.streamId ? `Stopped sharing: stream ${share.streamId} is done (its memory is kept).` : "Not sharing.";
    setShareStatus(null, ended || kept);
  }
  if (!share.streamId || share.released) return;
  share.released = true;
  if (!ended && !share.answered) {
    try {
      await api("DELETE", `/v1/streams/${enc(share.streamId)}`);
    } catch (e) {
      if (e.status !== 404) showError(e);
    }
  }
  refreshStreams();
}

// ------------------------------------------------------------------------------------------------ init

function init() {
  $("api-key").value = auth.key;
  $("key-form").addEventListener("submit", useKey);
  $("error-close").addEventListener("click", clearError);
  $("share-camera").addEventListener("click", () => startShare("camera"));
  $("share-screen").addEventListener("click", () => startShare("screen"));
  $("stop-share").addEventListener("click", () => stopShare());
  $("streams").addEventListener("click", onStreamPick);
  $("streams").addEventListener("keydown", onStreamPick);
  $("camera-form").addEventListener("submit", addCamera);
  $("upload").addEventListener("click", upload);
  $("ask").addEventListener("click", ask);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) ask();
  });
  window.addEventListener("pagehide", () => {
    const share = state.share;
    share?.pc?.close(); // a hang-up: the stream ends "done"
    if (share?.streamId && !share.answered) {
      const init = { method: "DELETE", keepalive: true, headers: authHeaders() };
      fetch(`/v1/streams/${enc(share.streamId)}`, init);
    }
  });
  refreshStreams();
  setInterval(refreshStreams, 2000);
  setInterval(refreshMemory, 2000);
}

init();
