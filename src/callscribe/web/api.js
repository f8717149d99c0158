// The native API as the page uses it: credentials from sessionStorage on every request.
const KEY = "callscribe.credentials";

export function credentials() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

export function saveCredentials(apiId, apiSecret, tenant) {
  sessionStorage.setItem(KEY, JSON.stringify({ apiId, apiSecret, tenant }));
}

export function clearCredentials() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(creds) {
  // The ASAPP header names: every surface of callscribe accepts them.
  return { "asapp-api-id": creds.apiId, "asapp-api-secret": creds.apiSecret };
}

/** JSON from `path`; ApiError with the server's message on a non-2xx answer. */
export async function api(path, { method = "GET", body, creds = credentials() } = {}) {
  if (!creds) throw new ApiError(401, "Not signed in");
  const init = { method, headers: headers(creds), cache: "no-store" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const message = data?.error?.message || data?.detail || data?.message || resp.statusText;
    const err = new ApiError(resp.status, message);
    if (resp.status === 401) window.dispatchEvent(new CustomEvent("callscribe:unauthorized"));
    throw err;
  }
  return data;
}

/** A recording (which needs the credentials) as an object URL the page can play. */
export async function blobUrl(path) {
  const creds = credentials();
  const resp = await fetch(path, { headers: headers(creds) });
  if (!resp.ok) throw new ApiError(resp.status, resp.statusText);
  return URL.createObjectURL(await resp.blob());
}

/** WS /v1/calls/{guid}/events: browsers cannot set headers on a WebSocket, so the pair goes in the query. */
export function eventsSocket(guid, since) {
  const creds = credentials();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({ since: String(since), apiId: creds.apiId, apiSecret: creds.apiSecret });
  return new WebSocket(`${proto}//${location.host}/v1/calls/${encodeURIComponent(guid)}/events?${q}`);
}

export const path = {
  calls: () => "/v1/calls?limit=200",
  call: (guid) => `/v1/calls/${encodeURIComponent(guid)}`,
  deliveries: (guid, callId) =>
    `/v1/calls/${encodeURIComponent(guid)}/deliveries` + (callId ? `?callId=${encodeURIComponent(callId)}` : ""),
  engine: () => "/v1/engine",
  control: (op) => `/mg-autotranscribe/v1/${op}`,
};
