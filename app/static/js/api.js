// The public API of attnmap, reached by URLs relative to the page: the page works the same at
// the site root, behind a proxy, or under a path prefix such as /attnmap/.

import { toFetchBody } from "./request.js";

let bearerToken = "";

/** Use this bearer token for every API call (empty: none). */
export function setToken(token) {
  bearerToken = token.trim();
}

/** Whether a bearer token is set (the curl command then mentions one). */
export function hasToken() {
  return bearerToken !== "";
}

/** Absolute URL of an API path, resolved against the page's own address. */
export function apiUrl(path) {
  return new URL(path, document.baseURI);
}

/** An error answer of the API: {code, message, field} plus status, request id and Retry-After. */
export class ApiError extends Error {
  constructor(status, error, requestId = null, retryAfter = null) {
    super(error.message);
    this.name = "ApiError";
    this.status = status;
    this.code = error.code;
    this.field = error.field ?? null;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

function withAuth(headers = {}) {
  const result = new Headers(headers);
  if (bearerToken) result.set("Authorization", `Bearer ${bearerToken}`);
  return result;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && typeof body.error === "object" && body.error
    ? body.error
    : { code: `http_${response.status}`, message: `the server answered ${response.status} ${response.statusText}`.trim(), field: null };
  return new ApiError(response.status, error, body?.request_id ?? response.headers.get("X-Request-ID"),
    response.headers.get("Retry-After"));
}

async function call(path, init) {
  let response;
  try {
    response = await fetch(apiUrl(path), { ...init, headers: withAuth(init.headers), credentials: "same-origin" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { code: "network_error", message: "could not reach the server", field: null });
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** GET a JSON document (e.g. "models", "examples"). */
export async function getJson(path, signal) {
  const response = await call(path, { method: "GET", signal, headers: { Accept: "application/json" } });
  return response.json();
}

/**
 * POST /visualize. `format` is "png" (resolves to {blob, headers}) or "json" ({doc, headers}).
 * Rejects with ApiError, or with an AbortError when `signal` fires.
 */
export async function visualize(request, format, signal) {
  const { body, headers } = toFetchBody(request, format);
  const response = await call("visualize", { method: "POST", body, headers, signal });
  if (format === "json") return { doc: await response.json(), headers: response.headers };
  return { blob: await response.blob(), headers: response.headers };
}
