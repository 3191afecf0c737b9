// What the result panel says about the request: progress while one is in flight, an alert for
// errors that belong to no field, a notice when the map shown is out of date, and a polite
// announcement for screen readers.

import { ApiError } from "./api.js";
import { showFieldError } from "./controls.js";
import { byId, show } from "./dom.js";

let progressTimer = 0;

/** Show progress for a request about `what` (elapsed time ticks until stopProgress). */
export function startProgress(what) {
  const started = performance.now();
  const text = byId("progress-text");
  const tick = () => {
    text.textContent = `Rendering ${what}… ${((performance.now() - started) / 1000).toFixed(1)} s`;
  };
  tick();
  clearInterval(progressTimer);
  progressTimer = setInterval(tick, 100);
  show(byId("progress"));
  byId("result").setAttribute("aria-busy", "true");
}

export function stopProgress() {
  clearInterval(progressTimer);
  show(byId("progress"), false);
  byId("result").removeAttribute("aria-busy");
}

/** Say something to assistive technology without moving focus. */
export function announce(message) {
  byId("announcer").textContent = message;
}

export function showAlert(title, body) {
  byId("alert-title").textContent = title;
  byId("alert-body").textContent = body;
  show(byId("alert"));
}

/** Hide the alert and the out-of-date notice (a new request is starting). */
export function clearMessages() {
  show(byId("alert"), false);
  show(byId("notice"), false);
}

/** Tell the result panel that the map is out of date because of the error shown at `error`. */
function showNotice(error) {
  const container = error.closest(".field");
  const label = container?.querySelector("label, .field-label")?.firstChild?.textContent?.trim() ?? "the highlighted field";
  byId("notice-text").textContent = `Not updated: check “${label}”.`;
  const go = byId("notice-go");
  go.onclick = () => {
    const input = container?.querySelector("input, select, textarea");
    (input ?? error).scrollIntoView({ block: "center" });
    input?.focus();
  };
  show(byId("notice"));
}

const ALERT_TITLES = {
  0: "Could not reach the server", 400: "The request could not be read", 401: "This server needs an API token",
  404: "Not found", 413: "Too large", 415: "Unsupported input", 422: "Check the input", 503: "The server is busy",
};

/**
 * Show an error where it belongs: next to its field when the API named one that is on the page,
 * else in the alert. `hasMap` says whether an (now out-of-date) map is on show.
 */
export function showError(error, { hasMap = false } = {}) {
  if (!(error instanceof ApiError)) {
    showAlert("Something went wrong", String(error.message ?? error));
    return;
  }
  if (error.status === 401) {
    const auth = byId("auth");
    show(auth);
    auth.open = true;
  } else {
    const slot = showFieldError(error.field, error.message);
    if (slot) {
      announce(`Not rendered: ${error.message}`);
      if (hasMap) showNotice(slot);
      return;
    }
  }
  const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
  const id = error.requestId ? ` (request ${error.requestId})` : "";
  const title = ALERT_TITLES[error.status] ?? (error.status >= 500 ? "Server error" : "Request failed");
  showAlert(title, `${error.message}.${retry}${id}`);
}
