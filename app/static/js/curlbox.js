// "The same request with curl": the commands for the requests just sent, a request.json to go
// with them when a JSON body is too long to show, and a copy button.

import { apiUrl, hasToken } from "./api.js";
import { byId, show } from "./dom.js";
import { toCurl } from "./request.js";

/** Show the curl commands for jobs [{request, filename}]. */
export function showCurl(jobs) {
  const commands = jobs.map((job) => toCurl(job.request, apiUrl("visualize"), { token: hasToken(), output: job.filename }));
  byId("curl").textContent = commands.map((c) => c.command).join("\n\n");
  const body = commands.find((c) => c.bodyFile)?.bodyFile ?? null;
  const link = byId("curl-body");
  if (link.href) URL.revokeObjectURL(link.href);
  if (body) link.href = URL.createObjectURL(new Blob([body], { type: "application/json" }));
  else link.removeAttribute("href");
  show(link, body !== null);
  byId("copy-status").textContent = "";
  show(byId("curl-box"));
}

/** Copy the commands (or select them where the clipboard API is unavailable, e.g. plain http). */
export async function copyCurl() {
  const code = byId("curl");
  const status = byId("copy-status");
  try {
    await navigator.clipboard.writeText(code.textContent);
    status.textContent = "Copied to the clipboard.";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    status.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
  }
}
