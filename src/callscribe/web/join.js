// Sends this browser's microphone to callscribe over WebRTC, authorised by a join token.
// The token comes from ?token= (then removed from the address bar) or the form. The offer is sent
// once ICE gathering is complete: the server answers once, with all its candidates (no trickle).
const OFFER_PATH = "/v1/media/webrtc";
const GATHER_LIMIT_MS = 5000; // send what was gathered by then (a host without any network is slow)

const $ = (id) => document.getElementById(id);
const STATES = {
  new: ["not connected", "off"], connecting: ["connecting…", "info"], connected: ["connected", "on"],
  disconnected: ["interrupted", "warn"], failed: ["failed", "bad"], closed: ["left", "off"],
  ended: ["ended", "bad"],
};
const ENDED = "The connection ended: the server closed it (you were removed, the meeting ended, or the " +
  "server is restarting) or the network failed. Join again to reconnect.";
let pc = null;
let stream = null;

function showState(state, text) {
  const out = $("state");
  const [label, tone] = STATES[state] || [state, "info"];
  out.dataset.state = state;
  out.textContent = text || label;
  out.className = `badge badge-${tone}`;
}

function showMic(on) {
  $("mic").textContent = on ? "on" : "off";
  $("mic").className = `badge badge-${on ? "on" : "off"}`;
}

function showError(message) {
  $("error").textContent = message || "";
}

function gathered(conn) {
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (conn.iceGatheringState === "complete") resolve(); };
    conn.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_LIMIT_MS);
  });
}

async function join(token) {
  showError("");
  $("join").disabled = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    showMic(true);
    pc = new RTCPeerConnection(); // no ICE servers: the server's answer names where it listens
    const conn = pc;
    conn.addEventListener("connectionstatechange", () => {
      if (conn !== pc) return; // a connection this page already let go of
      const state = conn.connectionState;
      if (state === "failed" || state === "closed") ended(); else showState(state);
    });
    for (const track of stream.getAudioTracks().slice(0, 1)) {
      conn.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    }
    showState("connecting");
    await conn.setLocalDescription(await conn.createOffer());
    await gathered(conn);
    const response = await fetch(OFFER_PATH, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ type: "offer", sdp: conn.localDescription.sdp }),
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error((body && body.error && body.error.message) || `refused (HTTP ${response.status})`);
    }
    await conn.setRemoteDescription(body);
    // The server ending the connection (attendee removed, idle, drain) closes DTLS at once; ICE
    // would only fail much later. Either way the microphone is released.
    const dtls = conn.getSenders()[0] && conn.getSenders()[0].transport;
    if (dtls) {
      dtls.addEventListener("statechange", () => {
        if (conn === pc && (dtls.state === "closed" || dtls.state === "failed")) ended();
      });
    }
    if (conn === pc) { // (not already ended)
      $("join-form").hidden = true;
      $("leave").hidden = false;
    }
  } catch (err) {
    leave();
    showState("failed", "not connected");
    showError(err && err.message ? err.message : String(err));
  } finally {
    $("join").disabled = false;
  }
}

// The connection ended without the user leaving: the microphone is released, the form comes back
// and the page says so until the next join.
function ended() {
  leave();
  showState("ended");
  showError(ENDED);
}

function leave() {
  if (pc) pc.close();
  pc = null;
  if (stream) for (const t of stream.getTracks()) t.stop();
  stream = null;
  showMic(false);
  showState("closed");
  $("join-form").hidden = false;
  $("leave").hidden = true;
}

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (token) join(token); else showError("Enter the join token you were given.");
});
$("leave").addEventListener("click", leave);

const params = new URLSearchParams(location.search);
const given = params.get("token");
if (given) {
  history.replaceState(null, "", location.pathname); // the token stays out of history and bookmarks
  $("token").value = given;
  join(given);
}
