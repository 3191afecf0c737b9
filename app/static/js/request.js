// One visualize request, as the page holds it, and its two spellings: a fetch body and a curl
// command that does exactly the same thing.
//
// A request is {fields, file, weightsText}:
//   fields       options and text sources, e.g. {model: "minilm", text: "...", layer: -1}
//   file         {part: "image" | "weights", blob, filename} for a multipart upload, or null
//   weightsText  raw weights as JSON text (sent verbatim inside the JSON body), or null

/** The JSON body text of a request without a file (weights text spliced in unchanged). */
export function jsonBody(request, format) {
  const fields = format && format !== "png" ? { ...request.fields, format } : { ...request.fields };
  const rest = JSON.stringify(fields);
  if (request.weightsText == null) return rest;
  const weights = request.weightsText.trim();
  return rest === "{}" ? `{"weights":${weights}}` : `{"weights":${weights},${rest.slice(1)}`;
}

/** Text of a form field: lists as JSON, everything else as its plain string. */
function formValue(value) {
  return Array.isArray(value) ? JSON.stringify(value) : String(value);
}

/** {body, headers} for fetch: multipart when a file is uploaded, JSON otherwise. */
export function toFetchBody(request, format = "png") {
  if (request.file) {
    const form = new FormData();
    for (const [name, value] of Object.entries(request.fields)) form.append(name, formValue(value));
    if (format !== "png") form.append("format", format);
    form.append(request.file.part, request.file.blob, request.file.filename);
    return { body: form, headers: {} };
  }
  return { body: jsonBody(request, format), headers: { "Content-Type": "application/json" } };
}

/** Quote a string for a POSIX shell. */
export function shellQuote(text) {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

/** A file name as curl's -F reads it: double-quoted when it holds curl's separators. */
function curlFilename(name) {
  return /[;,"\\]/.test(name) ? `"${name.replace(/["\\]/g, "\\$&")}"` : name;
}

// Longer JSON bodies are shown as a file reference instead of inline.
export const INLINE_BODY_LIMIT = 1500;

/**
 * The curl command for a request. Returns {command, bodyFile}: bodyFile is the JSON text the
 * command reads from request.json when the body is too long to show inline (else null).
 */
export function toCurl(request, url, { token = false, output = "attention.png" } = {}) {
  const parts = ["curl -sS --fail-with-body", `-o ${shellQuote(output)}`];
  if (token) parts.push('-H "Authorization: Bearer $ATTNMAP_TOKEN"');
  let bodyFile = null;
  if (request.file) {
    for (const [name, value] of Object.entries(request.fields)) {
      parts.push(`--form-string ${shellQuote(`${name}=${formValue(value)}`)}`);
    }
    parts.push(`-F ${shellQuote(`${request.file.part}=@${curlFilename(request.file.filename || "upload")}`)}`);
  } else {
    const body = jsonBody(request);
    parts.push("-H 'Content-Type: application/json'");
    if (body.length > INLINE_BODY_LIMIT) {
      bodyFile = body;
      parts.push("--data-binary @request.json");
    } else {
      parts.push(`--data-binary ${shellQuote(body)}`);
    }
  }
  parts.push(shellQuote(String(url)));
  return { command: parts.join(" \\\n  "), bodyFile };
}
