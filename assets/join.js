// The guest page: preview the camera and microphone, then join the composition over WebRTC.
// The offer goes to the same URL as any participant's (POST /v1/compositions/{id}/participants);
// Tutti answers with ICE-lite, so no candidates are trickled. Joined, the page plays the
// composite and the mix of everyone but this guest, both from the one peer connection.
"use strict";

const compositionId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const participantsPath = `/v1/compositions/${encodeURIComponent(compositionId)}/participants`;
// The page shares the API token with the composition page's tab storage. A link may carry
// it after `#token=`, which browsers never send to a server; it is taken out of the address.
const TOKEN_KEY = "tutti-api-token";
const QUALITY_MS = 1000;

const status = document.getElementById("status");
const form = document.getElementById("join-form");
const nameInput = document.getElementById("name");
const joinButton = document.getElementById("join");
const leaveButton = document.getElementById("leave");
const room = document.getElementById("room");
const preview = document.getElementById("preview");
const quality = document.getElementById("quality");

let local = null;
let call = null; // { pc, location, timer }

const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) {
  sessionStorage.setItem(TOKEN_KEY, hashToken);
  history.replaceState(null, "", location.pathname + location.search);
}
nameInput.value = new URLSearchParams(location.search).get("name") ?? localStorage.getItem("tutti-guest-name") ?? "";

function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { ...(options.headers ?? {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  return fetch(path, { ...options, headers, cache: "no-store" });
}

/** The camera and microphone, or whichever of them this device has. `?audio=original`
 *  sends the microphone as it is (music, a studio microphone, a test tone), without the
 *  echo canceller, noise suppressor and gain control a laptop's microphone needs. */
async function openDevices() {
  const processed = new URLSearchParams(location.search).get("audio") !== "original";
  const audio = { echoCancellation: processed, noiseSuppression: processed, autoGainControl: processed };
  const video = { width: 1280, height: 720, frameRate: 30 };
  for (const wanted of [{ audio, video }, { audio }, { video }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(wanted);
    } catch (error) {
      if (wanted.video && !wanted.audio) throw error;
    }
  }
}

async function startPreview() {
  try {
    local = await openDevices();
    preview.srcObject = local;
    joinButton.disabled = false;
    const kinds = local.getTracks().map((t) => t.kind).join(" and ");
    status.textContent = `Ready to join with your ${kinds.replace("audio", "microphone").replace("video", "camera")}`;
  } catch (error) {
    status.textContent = `No camera or microphone: ${error.message}`;
  }
}

async function join() {
  joinButton.disabled = true;
  localStorage.setItem("tutti-guest-name", nameInput.value.trim());
  const pc = new RTCPeerConnection();
  call = { pc, location: null, timer: null };
  for (const track of local.getTracks()) pc.addTransceiver(track, { direction: "sendrecv", streams: [local] });
  // A guest without a camera (or microphone) still sees (or hears) the room.
  for (const kind of ["audio", "video"]) {
    if (local.getTracks().every((t) => t.kind !== kind)) pc.addTransceiver(kind, { direction: "recvonly" });
  }
  const received = new MediaStream();
  pc.ontrack = (event) => {
    received.addTrack(event.track);
    room.srcObject = received;
    room.play().catch(() => { status.textContent = "Press play to hear the room"; room.controls = true; });
  };
  pc.onconnectionstatechange = () => {
    const state = pc.connectionState;
    if (state === "connected") status.textContent = "In the room";
    if (state === "disconnected") status.textContent = "Connection interrupted, reconnecting…";
    if (state === "failed" || state === "closed") leave(state === "failed" ? "The connection failed" : "You left");
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    status.textContent = "Joining…";
    const response = await api(participantsPath, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: nameInput.value.trim(), sdp: pc.localDescription.sdp }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error?.message ?? `HTTP ${response.status}`);
    call.location = response.headers.get("Location") ?? `${participantsPath}/${body.id}`;
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    leaveButton.hidden = false;
    call.timer = setInterval(() => showQuality(pc), QUALITY_MS);
  } catch (error) {
    leave(`Could not join: ${error.message}`);
  }
}

/** What arrives of the room's picture: its size, frame rate and bitrate. */
async function showQuality(pc) {
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video" || !s.frameWidth) return;
    const previous = showQuality.last;
    const kbps = previous ? Math.round(((s.bytesReceived - previous.bytes) * 8) / (s.timestamp - previous.at)) : 0;
    showQuality.last = { bytes: s.bytesReceived, at: s.timestamp };
    quality.textContent = `${s.frameWidth}×${s.frameHeight}, ${Math.round(s.framesPerSecond ?? 0)} fps, ${kbps} kbit/s`;
  });
}

function leave(message) {
  if (!call) return;
  const { pc, location: participant, timer } = call;
  call = null;
  clearInterval(timer);
  pc.close();
  // Tutti also sees the peer connection close; the DELETE makes the leaving immediate.
  if (participant) api(participant, { method: "DELETE", keepalive: true }).catch(() => {});
  room.srcObject = null;
  quality.textContent = "";
  leaveButton.hidden = true;
  joinButton.disabled = local === null;
  status.textContent = message;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!call && local) join();
});
leaveButton.addEventListener("click", () => leave("You left"));
addEventListener("pagehide", () => leave("You left"));
startPreview();
