// From the page's state to visualize requests ("jobs"), one per model shown: one normally,
// two for the side-by-side comparison. A job is {model, badge, filename, description, request}.

import { showFieldError } from "./controls.js";
import { byId } from "./dom.js";
import { image, readTokens, weights } from "./sources.js";

const safe = (text) => String(text).replace(/[^A-Za-z0-9._-]/g, "_");

/** "layer3", or for a layer counted from the end "last-layer" / "layer-from-end2" (never "layer-1"). */
function layerPart(layer) {
  const value = Number(layer ?? -1);
  if (!Number.isInteger(value)) return `layer${safe(layer)}`;
  if (value === -1) return "last-layer";
  return value < 0 ? `layer-from-end${-value}` : `layer${value}`;
}

function filename(model, fields, layerText = layerPart(fields.layer)) {
  const head = fields.head === undefined ? "all-heads" : `head${safe(fields.head)}`;
  return `attnmap-${safe(model ?? "weights")}-${safe(fields.view)}-${layerText}-${head}.png`;
}

/** The download name, with the layer the server resolved (meta.layers) when the answer is known. */
export function downloadName(job, doc) {
  const layers = doc?.meta?.layers;
  if (!Array.isArray(layers) || layers.length === 0) return job.filename;
  const text = layers.length === 1 ? `layer${layers[0]}` : `layers${layers[0]}-${layers[layers.length - 1]}`;
  return filename(job.model, job.request.fields, text);
}

function description(model, fields) {
  const head = fields.head === undefined ? "every head" : typeof fields.head === "number" ? `head ${fields.head}` : `${fields.head} of heads`;
  const layer = fields.layer === undefined ? "last layer" : `layer ${fields.layer}`;
  return `${fields.view} of ${model ?? "raw weights"}, ${fields.method ?? "attention"}, ${layer}, ${head}`;
}

function job(model, badge, request) {
  return { model, badge, request, filename: filename(model, request.fields), description: description(model, request.fields) };
}

/**
 * The jobs for a source `kind` with request `options` (from the controls), for `models` (names;
 * none for raw weights) with their `badges`. Returns [] after showing what is missing.
 */
export function buildJobs(kind, options, models = [], badges = []) {
  if (kind === "vision") {
    if (!image.current) {
      showFieldError("image", "Choose, drop or pick an example image first.");
      return [];
    }
    const region = image.current.region ? { region: image.current.region } : {};
    const file = { part: "image", blob: image.current.blob, filename: image.current.filename };
    return models.map((name, i) => job(name, badges[i] ?? "", { fields: { model: name, ...options, ...region }, file, weightsText: null }));
  }
  if (kind === "text") {
    const text = byId("text").value;
    if (text.trim() === "") {
      showFieldError("text", "Type a text first.");
      return [];
    }
    return [job(models[0], "", { fields: { model: models[0], text, ...options }, file: null, weightsText: null })];
  }
  if (weights.error) {
    showFieldError("weights", weights.error);
    return [];
  }
  if (!weights.text && !weights.file) {
    showFieldError("weights", "Paste weights, upload a file or use the sample first.");
    return [];
  }
  const tokens = readTokens();
  const fields = tokens ? { ...options, tokens } : options;
  const file = weights.file ? { part: "weights", ...weights.file } : null;
  return [job(null, "", { fields, file, weightsText: file ? null : weights.text })];
}
