// The chorus web player (docs/edge.md, "The web player"): plays tracks from the edge that served
// this page through Media Source Extensions. Each manifest's Ed25519 signature is checked with
// WebCrypto against the origin key the edge is configured with, and each chunk's bytes against
// its BLAKE3 id before they are played. A protected track's segments (docs/protocol.md §3.7)
// are then decrypted (AES-128-CBC, WebCrypto) with the track's key, which the edge hands out
// only for a token that covers the track. The bitrate is chosen per segment from the measured
// throughput. Nothing is fetched from anywhere but this edge.
//
// URL parameters: track=ID or tracks=ID,ID,... (a playlist), token=JWT (an access token, sent
// as a bearer token), buffer=SECONDS (how far ahead to fetch, 4 to 120; default 20),
// debug=1 (keeps the appended bytes for tests: window.chorusPlayer.appendedBytes).

import { blake3Hex, selfTest } from "./blake3.js";

const params = new URLSearchParams(location.search);
const audio = document.getElementById("audio");
const $ = (id) => document.getElementById(id);

const BUFFER_GOAL_S = Math.min(120, Math.max(4, Number(params.get("buffer")) || 20));
/** The share of the measured throughput a rendition may take. */
const SAFETY = 0.7;
const MAX_MANIFEST_BYTES = 4 << 20;
const MAX_CHUNK_BYTES = 8 << 20;
const DEBUG = params.get("debug") === "1";

/** What the page shows, and what tests read (window.chorusPlayer.state). */
const state = {
  status: "starting",
  error: null,
  track: null,
  title: "",
  rendition: null,
  bitrateBps: 0,
  bufferAheadS: 0,
  estimateBps: null,
  bytes: 0,
  startupMs: null,
  verified: 0,
  rejected: 0,
  switches: 0,
  keyId: null,
  /** Whether the track playing is protected (its segments decrypted here). */
  protected: false,
  mediaErrors: 0,
  tracksDone: 0,
  /** One entry per appended segment: {track, index, rendition, id, size}. */
  appended: [],
};
window.chorusPlayer = { state, appendedBytes: [] };

let token = params.get("token") || "";
let playlist = (params.get("tracks") || params.get("track") || "")
  .split(",")
  .map((t) => t.trim())
  .filter((t) => /^[A-Za-z0-9_-]{1,64}$/.test(t));

function fmtBps(bps) {
  if (bps == null) return "–";
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
}

function show() {
  $("status").textContent = state.status;
  $("error").textContent = state.error || "";
  $("bitrate").textContent = state.rendition ? `${fmtBps(state.bitrateBps)} (${state.rendition})` : "–";
  $("buffer").textContent = `${state.bufferAheadS.toFixed(1)} s`;
  $("bar").firstElementChild.style.width = `${Math.min(100, (100 * state.bufferAheadS) / BUFFER_GOAL_S)}%`;
  $("estimate").textContent = fmtBps(state.estimateBps);
  $("bytes").textContent = state.bytes.toLocaleString("en");
  $("startup").textContent = state.startupMs == null ? "–" : `${Math.round(state.startupMs)} ms`;
  $("chunks").textContent = `${state.verified} / ${state.rejected}`;
  $("key").textContent = state.keyId ? `origin key ${state.keyId}` : "–";
  $("protected").textContent = state.track ? (state.protected ? "yes: decrypted with the track's key" : "no") : "–";
  $("title").textContent = state.title;
}

function fail(message) {
  state.status = "stopped";
  state.error = message;
  show();
}

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

/** RFC 8785 (JCS) canonical JSON: members sorted by UTF-16 code units, no whitespace, and
 * numbers and strings as ECMAScript's JSON.stringify writes them (which is what JCS says). */
function canonical(v) {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  return `{${Object.keys(v)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
    .join(",")}}`;
}

function base64(s) {
  const bin = atob(s);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** The origin key from the edge's configuration, imported for WebCrypto; throws a message to show. */
async function originKey() {
  if (!window.isSecureContext || !crypto.subtle) {
    throw new Error(
      "This page is not a secure context (HTTPS or localhost), so the browser offers no WebCrypto: manifests cannot be checked, and nothing is played.",
    );
  }
  const r = await fetch("config.json", { cache: "no-store" });
  if (!r.ok) throw new Error(`player configuration: HTTP ${r.status}`);
  const config = await r.json();
  if (!config.origin_key) {
    throw new Error(
      "This edge was started without --origin-key, so the player has no key to check manifests with; nothing is played.",
    );
  }
  try {
    const key = await crypto.subtle.importKey("raw", base64(config.origin_key), { name: "Ed25519" }, false, ["verify"]);
    return { key, keyId: config.key_id };
  } catch (e) {
    throw new Error(
      `This browser cannot verify Ed25519 signatures (WebCrypto: ${e.message || e}); manifests cannot be checked, and nothing is played. Chromium 137+, Firefox 129+ and Safari 17+ can.`,
    );
  }
}

/** Checks the manifest `text` as docs/protocol.md §4 says; returns it parsed, or throws. */
async function verifyManifest(text, origin) {
  if (text.length > MAX_MANIFEST_BYTES) throw new Error("manifest larger than 4 MiB");
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error("manifest is not JSON");
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new Error("manifest is not a JSON object");
  if (doc.format !== "chorus-manifest/1") throw new Error(`manifest format ${JSON.stringify(doc.format)} is not chorus-manifest/1`);
  const sig = doc.signature;
  if (!sig || sig.alg !== "ed25519") throw new Error("manifest is not signed with ed25519");
  if (sig.key_id !== origin.keyId) {
    throw new Error(`manifest signed by key ${sig.key_id}, not by the origin key ${origin.keyId}: not playing it`);
  }
  let value;
  try {
    value = base64(sig.value);
  } catch {
    value = new Uint8Array(0);
  }
  if (value.length !== 64) throw new Error("manifest signature is not 64 bytes of base64");
  const unsigned = { ...doc };
  delete unsigned.signature;
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, origin.key, value, new TextEncoder().encode(canonical(unsigned)));
  if (!ok) throw new Error("The manifest's signature does not verify against the origin key: it was altered; not playing it.");
  if (!Array.isArray(doc.renditions) || doc.renditions.length === 0) throw new Error("manifest has no renditions");
  return doc;
}

const mime = (r) => `audio/mp4; codecs="${r.codec}"`;

const hexBytes = (hex) => Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));

/** A protected track's content key (WebCrypto AES-CBC), from this edge's key route with the
 * token; `null` for a clear track. The key is never stored (no-store). */
async function contentKey(doc) {
  const p = doc.protection;
  if (p == null) return null;
  if (p.method !== "aes-128-cbc" || !/^[0-9a-f]{16}$/.test(p.key_id)) {
    throw new Error(`track ${doc.track_id} is protected in a way this player does not know (${p.method})`);
  }
  const url = `/v1/tracks/${encodeURIComponent(doc.track_id)}/keys/${p.key_id}`;
  const r = await fetchRetrying(url, { headers: authHeaders(), cache: "no-store" });
  if (r.status === 401 || r.status === 403) {
    const why = await r.text();
    throw new Error(
      `track ${doc.track_id} is protected: HTTP ${r.status}: a token that covers it is needed (add token=… to the URL). ${why}`,
    );
  }
  if (!r.ok) throw new Error(`track ${doc.track_id}: its key: HTTP ${r.status}`);
  const raw = new Uint8Array(await r.arrayBuffer());
  if (raw.length !== 16) throw new Error(`track ${doc.track_id}: a key of ${raw.length} bytes`);
  return crypto.subtle.importKey("raw", raw, { name: "AES-CBC" }, false, ["decrypt"]);
}

/** `fetch`, tried again after a network error or a 5xx (an edge restarting, an upstream
 * failing over): 3 tries, 0.5 s and 1 s apart. Other answers are the caller's to judge. */
async function fetchRetrying(url, init) {
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await fetch(url, init);
      if (r.status < 500 || attempt >= 2) return r;
    } catch (e) {
      if (e.name === "AbortError" || attempt >= 2) throw e;
    }
    await sleep(500 * 2 ** attempt);
  }
}

/** A chunk's bytes, checked against its id. Bytes that do not match are fetched once more,
 * past the browser's cache (which would keep the bad copy for a year: chunks are immutable). */
async function fetchChunk(id, signal, headers) {
  const url = `/v1/chunks/${id}.m4s`;
  for (let attempt = 0; ; attempt++) {
    const began = performance.now();
    const init = { headers: authHeaders(headers), signal, cache: attempt === 0 ? "default" : "reload" };
    const r = await fetchRetrying(url, init);
    if (!r.ok) {
      const why = r.status === 401 ? " (this edge needs an access token: it may have expired)" : "";
      throw new Error(`chunk ${id}: HTTP ${r.status}${why}`);
    }
    const buf = await r.arrayBuffer();
    const ms = performance.now() - began;
    if (buf.byteLength > MAX_CHUNK_BYTES) throw new Error(`chunk ${id} larger than 8 MiB`);
    const bytes = new Uint8Array(buf);
    // What came from the browser's own cache says nothing about the link.
    const timing = performance.getEntriesByName(new URL(url, location.href).href).pop();
    const cached = timing !== undefined && timing.transferSize === 0;
    // The browser keeps 250 entries by default, then records no more: read, then dropped.
    performance.clearResourceTimings();
    state.bytes += bytes.length;
    if (blake3Hex(bytes) === id) {
      state.verified++;
      return { bytes, ms, cached };
    }
    state.rejected++;
    if (attempt >= 1) throw new Error(`chunk ${id}: the bytes received twice do not hash to its id; not playing them`);
  }
}

let averageBps = null;
/** Downloads too small to time alone, added up until they are not. */
const small = { bytes: 0, ms: 0 };

/** Updates the throughput estimate from one download: the lower of the last download and an
 * average of them, so that one slow download moves the bitrate down at once, and a faster link
 * moves it up within a download or two. Downloads under 8 KiB count together. */
function measure(bytes, ms) {
  if (ms <= 0) return;
  if (bytes < 8192) {
    small.bytes += bytes;
    small.ms += ms;
    if (small.bytes < 8192) return;
    [bytes, ms] = [small.bytes, small.ms];
    small.bytes = 0;
    small.ms = 0;
  }
  const sample = (bytes * 8) / (ms / 1000);
  averageBps = averageBps == null ? sample : 0.5 * averageBps + 0.5 * sample;
  state.estimateBps = Math.min(averageBps, sample);
}

/** The rendition for the next segment: the highest the estimate carries with a margin; the
 * lowest while there is no estimate (its download measures the link). */
function choose(renditions) {
  if (state.estimateBps == null) return renditions[0];
  let best = renditions[0];
  for (const r of renditions) if (r.bitrate_bps <= SAFETY * state.estimateBps) best = r;
  return best;
}

function bufferedAhead() {
  const b = audio.buffered;
  for (let i = 0; i < b.length; i++) {
    if (b.start(i) <= audio.currentTime + 0.1 && audio.currentTime < b.end(i)) return b.end(i) - audio.currentTime;
  }
  return 0;
}

const once = (target, event) => new Promise((resolve) => target.addEventListener(event, resolve, { once: true }));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function append(sb, bytes) {
  return new Promise((resolve, reject) => {
    const done = () => {
      sb.removeEventListener("error", failed);
      resolve();
    };
    const failed = () => {
      sb.removeEventListener("updateend", done);
      reject(new Error("the browser refused a segment (Media Source error)"));
    };
    sb.addEventListener("updateend", done, { once: true });
    sb.addEventListener("error", failed, { once: true });
    sb.appendBuffer(bytes);
  });
}

/** Plays `trackId` to its end (or until a seek or error says otherwise). */
async function playTrack(trackId, nextTrack, origin) {
  state.track = trackId;
  state.status = "fetching the manifest";
  showPlaylist();
  show();
  const r = await fetchRetrying(`/v1/tracks/${encodeURIComponent(trackId)}/manifest`, {
    headers: authHeaders(),
    cache: "no-store",
  });
  if (r.status === 401 || r.status === 403) {
    const why = await r.text();
    throw new Error(`track ${trackId}: HTTP ${r.status}: this edge asks for an access token (add token=… to the URL). ${why}`);
  }
  if (!r.ok) throw new Error(`track ${trackId}: HTTP ${r.status}`);
  const doc = await verifyManifest(await r.text(), origin);
  if (doc.track_id !== trackId) {
    throw new Error(`the manifest is track ${JSON.stringify(doc.track_id)}'s, not ${trackId}'s: not playing it`);
  }
  state.keyId = origin.keyId;
  state.title = doc.title || trackId;
  // A protected track: its key before any chunk is fetched (no token, nothing fetched).
  const key = await contentKey(doc);
  state.protected = key !== null;
  const playable = doc.renditions
    .filter((x) => x.container === "cmaf" && x.init && MediaSource.isTypeSupported(mime(x)))
    .sort((a, b) => a.bitrate_bps - b.bitrate_bps);
  // Without SourceBuffer.changeType (older browsers), one codec only: the lowest rung's.
  const canChange = typeof SourceBuffer !== "undefined" && "changeType" in SourceBuffer.prototype;
  const renditions = canChange ? playable : playable.filter((x) => x.codec === playable[0]?.codec);
  if (renditions.length === 0) throw new Error(`track ${trackId}: no rendition this browser can play`);
  const segments = renditions[0].segments.length;
  const starts = [];
  let t = 0;
  for (const s of renditions[0].segments) {
    starts.push(t);
    t += s.duration_ms / 1000;
  }
  showSeeks(starts);

  const ms = new MediaSource();
  audio.src = URL.createObjectURL(ms);
  await once(ms, "sourceopen");
  ms.duration = doc.duration_ms / 1000;
  let bufferType = mime(renditions[0]);
  const sb = ms.addSourceBuffer(bufferType);
  let initOf = null;
  let next = 0;
  let ended = false;
  let controller = new AbortController();
  const segmentAt = (time) => {
    let i = 0;
    while (i + 1 < segments && starts[i + 1] <= time + 0.01) i++;
    return i;
  };
  const buffered = (t) => {
    for (let i = 0; i < audio.buffered.length; i++) {
      if (audio.buffered.start(i) <= t && t < audio.buffered.end(i)) return true;
    }
    return false;
  };
  let inFlight = -1;
  const onSeeking = () => {
    // From the segment sought to, skipping those already buffered whole.
    let i = segmentAt(audio.currentTime);
    while (i < segments && buffered(starts[i] + 0.05) && buffered((starts[i + 1] ?? ms.duration) - 0.05)) i++;
    next = i;
    if (inFlight !== -1 && inFlight !== i) {
      controller.abort();
      controller = new AbortController();
    }
  };
  audio.addEventListener("seeking", onSeeking);
  const onEnded = () => {
    ended = true;
  };
  audio.addEventListener("ended", onEnded);
  audio.play().catch(() => {
    state.status = "press play (the browser does not allow sound before a click)";
    show();
  });
  try {
    while (!ended) {
      if (audio.error) throw new Error(`media error: ${audio.error.message || audio.error.code}`);
      state.bufferAheadS = bufferedAhead();
      if (next >= segments) {
        if (ms.readyState === "open" && !sb.updating) ms.endOfStream();
        state.status = "playing the last segment";
        show();
        await sleep(200);
        continue;
      }
      if (state.bufferAheadS >= BUFFER_GOAL_S) {
        state.status = "playing";
        show();
        await sleep(200);
        continue;
      }
      const rendition = choose(renditions);
      const index = next;
      const signal = controller.signal;
      try {
        if (initOf !== rendition.id) {
          const init = await fetchChunk(rendition.init.id, signal);
          // Another codec (HE-AAC next to AAC-LC, say) needs the buffer told first.
          if (mime(rendition) !== bufferType) {
            sb.changeType(mime(rendition));
            bufferType = mime(rendition);
          }
          await append(sb, init.bytes);
          if (initOf !== null) state.switches++;
          initOf = rendition.id;
        }
        state.status = `fetching segment ${index + 1} of ${segments}`;
        show();
        // The last segment tells the edge what comes next, so it can warm it.
        const hint = index === segments - 1 && nextTrack ? { "Chorus-Next-Track": nextTrack } : {};
        const seg = rendition.segments[index];
        inFlight = index;
        const got = await fetchChunk(seg.id, signal, hint).finally(() => {
          inFlight = -1;
        });
        if (!got.cached) measure(got.bytes.length, got.ms);
        // Verified as the ciphertext it is named by, then decrypted for playing.
        if (key && !/^[0-9a-f]{32}$/.test(seg.iv || "")) throw new Error(`segment ${index}: no IV in a protected track`);
        const media = key
          ? new Uint8Array(await crypto.subtle.decrypt({ name: "AES-CBC", iv: hexBytes(seg.iv) }, key, got.bytes))
          : got.bytes;
        await append(sb, media);
        state.rendition = rendition.id;
        state.bitrateBps = rendition.bitrate_bps;
        state.appended.push({ track: trackId, index, rendition: rendition.id, id: seg.id, size: media.length });
        if (DEBUG) window.chorusPlayer.appendedBytes.push(media);
        if (next === index) next = index + 1;
      } catch (e) {
        if (e.name === "AbortError") continue; // a seek: go on from the new place
        throw e;
      }
      show();
    }
  } finally {
    audio.removeEventListener("seeking", onSeeking);
    audio.removeEventListener("ended", onEnded);
  }
  state.tracksDone++;
}

function showPlaylist() {
  const ol = $("playlist");
  ol.replaceChildren(
    ...playlist.map((t) => {
      const li = document.createElement("li");
      li.textContent = t;
      if (t === state.track) li.className = "now";
      return li;
    }),
  );
}

function showSeeks(starts) {
  $("seeks").replaceChildren(
    ...starts.map((s, i) => {
      const b = document.createElement("button");
      b.textContent = `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
      b.title = `segment ${i + 1}`;
      b.onclick = () => {
        audio.currentTime = s;
      };
      return b;
    }),
  );
}

async function main() {
  let started = performance.now();
  audio.addEventListener("error", () => {
    state.mediaErrors++;
    fail(`media error: ${audio.error ? audio.error.message || audio.error.code : "unknown"}`);
  });
  audio.addEventListener("playing", () => {
    if (state.startupMs == null) state.startupMs = performance.now() - started;
  });
  setInterval(() => {
    state.bufferAheadS = bufferedAhead();
    show();
  }, 250);
  if (playlist.length === 0) {
    const form = $("pick");
    form.hidden = false;
    state.status = "choose a track";
    show();
    await once(form, "submit").then((e) => e.preventDefault());
    playlist = $("pick-tracks").value.split(",").map((t) => t.trim()).filter((t) => /^[A-Za-z0-9_-]{1,64}$/.test(t));
    token = $("pick-token").value.trim() || token;
    form.hidden = true;
  }
  started = performance.now();
  if (!selfTest()) return fail("This browser computes BLAKE3 wrongly; chunks cannot be checked, and nothing is played.");
  let origin;
  try {
    origin = await originKey();
  } catch (e) {
    return fail(e.message);
  }
  try {
    for (let i = 0; i < playlist.length; i++) {
      await playTrack(playlist[i], playlist[i + 1], origin);
    }
    state.status = "done";
    show();
  } catch (e) {
    fail(e.message || String(e));
  }
}

main();
