// The three kinds of input: an image (chosen, dropped or an example), a text, or raw weights
// (pasted JSON or an uploaded file). Each keeps what the request needs.

import { byId, show } from "./dom.js";
import { dims, jsonShape, npyShape, safetensorsShape } from "./weights.js";

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];
const INLINE_JSON_FILE_LIMIT = 2 * 1024 * 1024;

/** The current image {blob, filename, region, label} and its preview. */
export const image = { current: null, previewUrl: null };

/** Set the image source and show its preview and name. */
export function setImage(blob, filename, extra = {}) {
  image.current = { blob, filename, region: extra.region ?? null, label: extra.label ?? null, example: extra.example ?? null };
  if (image.previewUrl) URL.revokeObjectURL(image.previewUrl);
  image.previewUrl = URL.createObjectURL(blob);
  const preview = byId("image-preview");
  preview.src = image.previewUrl;
  preview.alt = `Chosen image ${filename}`;
  show(preview);
  byId("dropzone").classList.add("has-image");
  byId("image-name").textContent = extra.label ? `${filename} · ${extra.label}` : filename;
  for (const thumb of document.querySelectorAll(".thumb")) {
    thumb.setAttribute("aria-pressed", String(thumb.dataset.name === extra.example));
  }
}

/** Wire the file input and drag-and-drop; `onImage(blob, filename)` is called with a new image. */
export function initImageInput(onImage, onError) {
  const input = byId("image-file");
  const zone = byId("dropzone");
  const accept = (file) => {
    if (!file) return;
    if (file.type && !IMAGE_TYPES.includes(file.type)) {
      onError(`${file.name} is ${file.type}; use a PNG, JPEG or WebP image`);
      return;
    }
    onImage(file, file.name);
  };
  input.addEventListener("change", () => accept(input.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("is-dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("is-dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("is-dragging");
    accept(event.dataTransfer.files[0]);
  });
}

/** The raw weights: JSON text or an uploaded binary file, with the shape read from either. */
export const weights = { text: null, file: null, shape: null, error: null };

/** Parse pasted JSON; sets weights.shape or weights.error. Returns the dims or null. */
export function setWeightsText(text) {
  weights.file = null;
  weights.text = text.trim() === "" ? null : text;
  weights.shape = null;
  weights.error = null;
  if (weights.text === null) return null;
  try {
    weights.shape = jsonShape(JSON.parse(weights.text));
  } catch (error) {
    weights.error = error instanceof SyntaxError ? `not valid JSON (${error.message})` : error.message;
    return null;
  }
  return dims(weights.shape);
}

/** Read an uploaded weights file: JSON goes into the text box, .npy/.safetensors stay a file. */
export async function setWeightsFile(file) {
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const isNpy = head[0] === 0x93 && head[1] === 0x4e;
  const isSafetensors = head.length > 8 && head[8] === 0x7b;
  if (!isNpy && !isSafetensors) {
    if (file.size > INLINE_JSON_FILE_LIMIT) throw new Error("JSON files over 2 MiB: send them with curl instead");
    const text = await file.text();
    byId("weights-text").value = text;
    return setWeightsText(text);
  }
  const buffer = await file.arrayBuffer();
  const shape = isNpy ? npyShape(buffer) : safetensorsShape(buffer);
  weights.text = null;
  weights.error = null;
  weights.shape = shape;
  weights.file = { blob: file, filename: file.name };
  byId("weights-text").value = "";
  return dims(shape);
}

/** A readable summary of the current weights. */
export function weightsSummary() {
  if (weights.error) return null;
  if (!weights.shape) return "Paste nested JSON numbers or upload a file.";
  const names = ["L", "H", "Q", "K"].slice(4 - weights.shape.length);
  const shape = weights.shape.map((n, i) => `${names[i]}=${n}`).join(" × ");
  return weights.file ? `Using ${weights.file.filename}: ${shape}` : `Shape ${shape}`;
}

/** Token labels from the tokens box: a JSON list, or comma-separated text; null when empty. */
export function readTokens() {
  const text = byId("tokens").value.trim();
  if (!text) return null;
  if (text.startsWith("[")) {
    try {
      const list = JSON.parse(text);
      if (Array.isArray(list)) return list.map(String);
    } catch {
      // fall through to comma splitting
    }
  }
  return text.split(",").map((token) => token.trim());
}
