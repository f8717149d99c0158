// The page: sign-in, sections (#/calls, #/calls/<guid>, #/engine) and who is signed in.
import { api, ApiError, clearCredentials, credentials, path, saveCredentials } from "./api.js";
import { CallList } from "./calls.js";
import { CallView } from "./call.js";
import { EngineView } from "./engine.js";

const $ = (id) => document.getElementById(id);
const placeholder = $("call-placeholder");
const views = { signIn: $("sign-in-view"), calls: $("calls-view"), engine: $("engine-view") };
let list = null;
let engine = null;
let callView = null;

function show(name) {
  for (const [k, el] of Object.entries(views)) el.hidden = k !== name;
  const signedIn = name !== "signIn";
  $("nav").hidden = !signedIn;
  $("session").hidden = !signedIn;
  for (const a of document.querySelectorAll("#nav a")) {
    a.toggleAttribute("aria-current", a.dataset.section === name);
    if (a.dataset.section === name) a.setAttribute("aria-current", "page");
  }
}

function signOut(message = "") {
  clearCredentials();
  list?.poller.stop();
  engine?.poller.stop();
  callView?.close();
  list = engine = callView = null;
  $("sign-in-error").textContent = message;
  show("signIn");
  $("api-id").focus();
}

function route() {
  const creds = credentials();
  if (!creds) return signOut($("sign-in-error").textContent);
  $("tenant-name").textContent = creds.tenant;
  list ??= new CallList({});
  engine ??= new EngineView();
  const hash = location.hash || "#/calls";
  const call = hash.match(/^#\/calls\/(.+)$/);
  if (hash.startsWith("#/engine")) {
    show("engine");
    list.poller.stop();
    engine.poller.start();
    document.title = "Engine · callscribe";
    return;
  }
  show("calls");
  engine.poller.stop();
  list.poller.start();
  const guid = call ? decodeURIComponent(call[1]) : null;
  if (callView?.guid !== guid) {
    callView?.close();
    callView = null;
    list.select(guid);
    const pane = $("call-pane");
    if (guid) {
      callView = new CallView(guid, pane, {
        onUnauthorized: () => signOut("Your key was refused. Sign in again."),
        onStateChange: () => list?.refresh(),
      });
      callView.open();
      document.title = `${guid} · callscribe`;
    } else {
      pane.replaceChildren(placeholder);
      document.title = "Calls · callscribe";
    }
  }
}

$("sign-in-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const apiId = $("api-id").value.trim();
  const apiSecret = $("api-secret").value;
  const error = $("sign-in-error");
  if (!apiId || !apiSecret) {
    error.textContent = "Enter both the API id and the secret.";
    return;
  }
  error.textContent = "";
  try {
    const who = await api(path.engine(), { creds: { apiId, apiSecret } });
    saveCredentials(apiId, apiSecret, who.tenant);
    $("api-secret").value = "";
    if (!location.hash || location.hash === "#/") location.hash = "#/calls";
    route();
    $("main").focus();
  } catch (err) {
    error.textContent = err instanceof ApiError && err.status === 401
      ? "That API id and secret were refused." : `Could not sign in: ${err.message}`;
  }
});

$("sign-out").addEventListener("click", () => signOut());
window.addEventListener("callscribe:unauthorized", () => {
  if (credentials()) signOut("Your key was refused. Sign in again.");
});
window.addEventListener("hashchange", route);
route();
