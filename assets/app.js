// Tutti's page: polls GET /v1/compositions and keeps one card per composition, with a player
// of its programme: over WHEP (WebRTC, under a second behind) where the browser and the server
// can, else its HLS output. `/?player=hls` asks for HLS. Cards are updated in place, so a
// refresh never restarts a playing video.
// Plain JS, no build step: the file is served as written, from inside the binary.
"use strict";

const REFRESH_MS = 2000;
// A new HLS output has no segment for a few seconds; a player that failed tries again after this.
const RETRY_MS = 2000;
// hls.js defaults, except where a live page wants less delay.
const HLS_CONFIG = {
  lowLatencyMode: true, // use LL-HLS partial segments if the playlist has them
  liveSyncDurationCount: 2, // start two segments behind the live edge instead of three
  maxLiveSyncPlaybackRate: 1.5, // drift back to the live edge by playing faster, not by seeking
  backBufferLength: 10, // seconds kept behind the playhead: a live view never seeks back far
};

// Where this tab keeps the API token it was given; gone when the tab closes.
const TOKEN_KEY = "tutti-api-token";

const list = document.getElementById("compositions");
const tokenForm = document.getElementById("token-form");
let refreshTimer;
const cards = new Map(); // composition id -> Card

/** An element with content attributes and children (nodes or text). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function badge(state) {
  return el("span", { class: "state", "data-state": state }, state);
}

/** A curl command line posting `body` to this server's API. */
function curl(path, body) {
  return `curl ${location.origin}${path} \\\n  -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(body)}'`;
}

// HLS only when asked, when this browser has no WebRTC, or when the server has none (409).
const WHEP = new URLSearchParams(location.search).get("player") !== "hls" && "RTCPeerConnection" in window;
let whepRefused = false;

/** One <video> playing the programme over WHEP (`url` null) or one HLS playlist, mirrored
 *  into an <output> that people and tests read. */
class Player {
  constructor(compositionId, url) {
    this.compositionId = compositionId;
    this.url = url;
    this.video = el("video", { muted: "", autoplay: "", playsinline: "", controls: "" });
    // The attribute only sets the default for parsed markup; autoplay policies read the property.
    this.video.muted = true;
    this.output = el("output", { "data-composition": compositionId });
    this.root = el("div", { class: "player" }, this.video, this.output);
    // Aborted on destroy, so a dying player cannot schedule a retry.
    this.listeners = new AbortController();
    const on = (type, handler) => this.video.addEventListener(type, handler, { signal: this.listeners.signal });
    on("playing", () => this.report("playing"));
    on("waiting", () => this.report("waiting"));
    on("pause", () => this.report("paused"));
    on("timeupdate", () => this.report());
    on("resize", () => this.report());
    on("error", () => this.fail(this.video.error?.message || "the video element failed"));
    this.start();
  }

  // hls.js wherever Media Source Extensions exist: it is the player tuned above, and recent
  // Chrome also answers canPlayType(HLS), so asking that first would bypass it. Native HLS
  // remains for browsers without MSE (older iPhones).
  start() {
    this.problem = "";
    this.report("loading");
    if (!this.url) {
      this.output.dataset.engine = "whep";
      this.startWhep().catch((error) => this.fail(error.message));
    } else if (window.Hls?.isSupported()) {
      this.output.dataset.engine = "hls.js";
      this.hls = new Hls(HLS_CONFIG);
      this.hls.on(Hls.Events.ERROR, (_, data) => {
        if (data.fatal) this.fail(`${data.type}: ${data.details}`);
      });
      this.hls.loadSource(this.url);
      this.hls.attachMedia(this.video);
    } else if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
      this.output.dataset.engine = "native";
      this.video.src = this.url;
    } else {
      this.problem = "this browser cannot play HLS";
      this.report("error");
    }
  }

  /** WHEP: a receive-only peer connection whose offer goes to the composition's WHEP URL. */
  async startWhep() {
    const pc = new RTCPeerConnection();
    this.pc = pc;
    for (const kind of ["video", "audio"]) pc.addTransceiver(kind, { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = (event) => {
      stream.addTrack(event.track);
      this.video.srcObject = stream;
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.pc && pc.connectionState === "failed") this.fail("the WebRTC connection failed");
    };
    await pc.setLocalDescription(await pc.createOffer());
    const response = await apiFetch(`/v1/compositions/${encodeURIComponent(this.compositionId)}/whep`, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    const answer = await response.text();
    // The next refresh turns every card to its HLS output.
    if (response.status === 409) whepRefused = true;
    if (!response.ok) throw new Error(`WHEP: HTTP ${response.status}`);
    this.session = response.headers.get("Location");
    if (pc === this.pc) await pc.setRemoteDescription({ type: "answer", sdp: answer });
  }

  /** Copies the video's state into the output: `state` if given, else the last one. */
  report(state = this.output.dataset.state) {
    const { videoWidth: width, videoHeight: height, currentTime } = this.video;
    Object.assign(this.output.dataset, { state, width, height, time: currentTime.toFixed(2) });
    const detail = this.problem || (width ? `${width}×${height}` : "");
    this.output.textContent = detail ? `${state} · ${detail}` : state;
  }

  /** Tears this attempt down and starts again after RETRY_MS. */
  fail(message) {
    if (this.retry) return; // tearing hls.js down may report a second error
    this.stop();
    this.problem = `${message}, retrying`;
    this.report("error");
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.start();
    }, RETRY_MS);
  }

  stop() {
    this.hls?.destroy();
    this.hls = undefined;
    this.pc?.close();
    this.pc = undefined;
    // The server also sees the peer go; the DELETE frees the viewer at once.
    if (this.session) apiFetch(this.session, { method: "DELETE", keepalive: true }).catch(() => {});
    this.session = undefined;
    this.video.srcObject = null;
    this.video.removeAttribute("src");
    this.video.load();
  }

  destroy() {
    this.listeners.abort();
    clearTimeout(this.retry);
    this.stop();
  }
}

/** One composition: its player (if it has an HLS output), participants, outputs, CDN hint. */
class Card {
  constructor(id) {
    this.id = id;
    // What the screen shows: false until the first update decides; null for WHEP, a playlist's
    // URL for HLS, undefined for the hint.
    this.playlist = false;
    this.title = el("h2");
    this.summary = el("p", { class: "summary" });
    this.screen = el("div", { class: "screen" });
    this.participants = el("ul", { class: "participants" });
    this.outputs = el("ul", { class: "outputs" });
    const rtmp = { kind: "rtmp", url: "rtmp://a.rtmp.youtube.com/live2/<key>" };
    this.root = el(
      "article",
      { class: "composition", "data-composition-id": id },
      el("header", {}, this.title, this.summary),
      this.screen,
      el("h3", {}, "Participants"),
      this.participants,
      el("h3", {}, "Outputs"),
      this.outputs,
      el(
        "details",
        {},
        el("summary", {}, "Push to a CDN"),
        el("p", {}, "Add an RTMP output with your stream key (YouTube shown; any RTMP or RTMPS ingest works):"),
        el("pre", {}, curl(`/v1/compositions/${id}/outputs`, rtmp)),
      ),
    );
  }

  update(composition) {
    const { id, name, state, video, participants } = composition;
    const outputs = composition.outputs ?? []; // servers without live outputs omit the field
    this.title.textContent = name || id;
    const canvas = video ? `${video.width}×${video.height} at ${video.fps} fps` : "audio only";
    this.summary.textContent = `${state} · ${canvas}` + (composition.last_error ? ` · ${composition.last_error}` : "");
    this.participants.replaceChildren(
      ...participants.map((p) =>
        el("li", { "data-participant-id": p.id }, el("span", { class: "name" }, p.name), " ", badge(p.state),
          p.last_error ? el("span", { class: "error" }, p.last_error) : ""),
      ),
    );
    if (!participants.length) this.participants.append(el("li", { class: "none" }, "Nobody has joined yet."));
    this.outputs.replaceChildren(
      ...outputs.map((o) =>
        el("li", { "data-output-id": o.id }, o.kind, " ", badge(o.state), " ",
          o.playlist_url ? el("a", { href: o.playlist_url }, "playlist") : o.url ?? o.path ?? "",
          o.last_error ? el("span", { class: "error" }, o.last_error) : ""),
      ),
    );
    if (!outputs.length) this.outputs.append(el("li", { class: "none" }, "None."));
    this.show(WHEP && !whepRefused ? null : outputs.find((o) => o.kind === "hls")?.playlist_url);
  }

  /** Replaces the player only when what it plays changes (WHEP, or the HLS playlist), so
   *  refreshes never interrupt playback. */
  show(playlist) {
    if (playlist === this.playlist) return;
    this.playlist = playlist;
    this.player?.destroy();
    this.player = playlist !== undefined ? new Player(this.id, playlist) : undefined;
    this.screen.replaceChildren(
      this.player?.root ??
        el("p", { class: "hint" }, "No HLS output to watch. Add one:", el("pre", {}, curl(`/v1/compositions/${this.id}/outputs`, { kind: "hls" }))),
    );
  }

  destroy() {
    this.player?.destroy();
    this.root.remove();
  }
}

function show(compositions) {
  const listed = new Set();
  for (const composition of compositions) {
    listed.add(composition.id);
    if (!cards.has(composition.id)) {
      const card = new Card(composition.id);
      cards.set(composition.id, card);
      list.append(card.root);
    }
    cards.get(composition.id).update(composition);
  }
  for (const [id, card] of cards) {
    if (!listed.has(id)) {
      card.destroy();
      cards.delete(id);
    }
  }
  document.getElementById("empty").hidden = cards.size > 0;
}

/** A request to the API, with the token of this tab if it has one. */
function apiFetch(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { ...(options.headers ?? {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  return fetch(path, { ...options, headers, cache: "no-store" });
}

/** The API needs a token (401): forget a wrong one and ask for another. */
function askForToken(status) {
  const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
  sessionStorage.removeItem(TOKEN_KEY);
  tokenForm.hidden = false;
  status.textContent = hadToken ? "That token was refused: enter another" : "This server needs an API token";
}

tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  tokenForm.hidden = true;
  clearTimeout(refreshTimer);
  refresh();
});

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await apiFetch("/v1/compositions");
    if (response.status === 401) {
      askForToken(status);
      return; // until a token is entered
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    show((await response.json()).compositions);
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    // Counted so that a test can wait for the next refresh.
    list.dataset.refreshes = Number(list.dataset.refreshes ?? 0) + 1;
  } catch (error) {
    // The last list stays on screen: the server may only be restarting.
    status.textContent = `Cannot load compositions: ${error.message}`;
  }
  refreshTimer = setTimeout(refresh, REFRESH_MS);
}

// Leaving the page ends its WHEP viewers at once rather than when their connections time out.
addEventListener("pagehide", () => cards.forEach((card) => card.player?.destroy()));
document.getElementById("create-example").textContent = curl("/v1/compositions", {
  name: "Demo",
  video: { width: 1280, height: 720, fps: 30 },
  outputs: [{ kind: "hls" }],
});
refresh();
