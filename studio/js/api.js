// The batchfn HTTP API, called with the function key in `x-functions-key`.
//
// The key lives in this tab's sessionStorage only: it arrives in the URL fragment (which
// browsers never send to a server), is moved there at load and removed from the address
// bar, and is never put in a URL, a log or the page.

const KEY_STORAGE = "batchfn.studio.key";
// The page is served at <host>/<route prefix>/studio/: the API is one level up.
const API_BASE = new URL("../", document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function currentKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

/** An API path from segments, each encoded: apiPath("jobs", name, "errors"). */
export function apiPath(...segments) {
  return segments.map((s) => encodeURIComponent(String(s))).join("/");
}

async function send(method, path, { body, query, signal } = {}) {
  const key = currentKey();
  if (!key) throw new ApiError(401, "no_key", "no function key");
  const url = new URL(path, API_BASE);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { "x-functions-key": key, Accept: "application/json" };
  const init = { method, headers, signal, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", `the API cannot be reached (${error.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    // not JSON: the status says enough
  }
  const message = error.message || `${response.status} ${response.statusText}`;
  const failure = new ApiError(response.status, error.code || "http_error", message, error.details);
  if (response.status === 401) {
    window.dispatchEvent(new CustomEvent("studio:unauthorized", { detail: failure }));
  }
  return failure;
}

/** A JSON call: api("GET", "jobs", {query: {status: "Running"}}). */
export async function api(method, path, options) {
  const response = await send(method, path, options);
  return response.status === 204 ? null : response.json();
}

/** A text answer (logs): {text, size} where size is the whole log's size in bytes. */
export async function apiText(path, options) {
  const response = await send("GET", path, options);
  const size = Number(response.headers.get("X-Log-Size") || "0");
  return { text: await response.text(), size };
}

/** Download an answer as a file; the key goes in the header, never in a link. */
export async function download(path, fallbackName) {
  const response = await send("GET", path);
  const disposition = response.headers.get("Content-Disposition") || "";
  // RFC 5987's filename* carries the exact name; filename="..." is its ASCII fallback.
  const exact = /filename\*=UTF-8''([^;\s]+)/i.exec(disposition);
  const plain = /filename="([^"]+)"/.exec(disposition);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = exact ? decodeURIComponent(exact[1]) : plain ? plain[1] : fallbackName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
