// The option controls: their ranges follow the chosen model (or the shape of raw weights), they
// read back as request fields, and API errors are shown next to the field they name.

import { byId, setOptions, show } from "./dom.js";

export const COLORMAPS = ["viridis", "magma", "inferno", "plasma", "cividis", "turbo", "jet", "hot", "gray", "bone",
  "Blues", "Reds", "Greens", "Purples", "Oranges", "YlOrRd", "coolwarm", "RdBu_r", "bwr", "seismic"];

// Short labels: the select must read in full in a narrow column and on a phone.
const VIEWS = {
  vision: [["overlay", "Overlay"], ["heatmap", "Patch heatmap"], ["grid", "Every head"]],
  text: [["heatmap", "Heatmap"], ["text", "Text"], ["grid", "Every head"]],
  weights: [["heatmap", "Heatmap"], ["text", "Text"], ["grid", "Every head"]],
};

// Past this many tokens the page leaves special tokens out of the colour range by default:
// [CLS]/[SEP] (or a first-token sink) would otherwise take the whole range of a long input.
export const LONG_INPUT_TOKENS = 64;

const METHOD_HINTS = {
  attention: "The chosen layer's attention.",
  rollout: "Attention flow through layers 0 to the chosen one.",
  gradient: "Attention weighted by its gradient (needs a model input).",
};

const ids = ["layer", "head", "method", "view", "query", "colormap", "alpha", "size", "interpolation", "discard_ratio",
  "annotate", "mask_special", "merge_subwords", "normalize", "clip_special"];

/** The option inputs by field name. */
export function inputs() {
  return Object.fromEntries(ids.map((id) => [id, byId(id)]));
}

let configuredKind = null;

/**
 * Adapt the controls to a source: {kind: "vision" | "text" | "weights", layers, heads, queries,
 * tokens}. Ranges come from GET /models or from the shape of the weights.
 */
export function configure(source) {
  const c = inputs();
  const { kind, layers, heads } = source;
  c.layer.min = String(-layers);
  c.layer.max = String(layers - 1);
  const current = Number(c.layer.value);
  if (c.layer.value === "" || !Number.isInteger(current) || current < -layers || current > layers - 1) c.layer.value = "-1";
  byId("layer-hint").textContent = layers === 1 ? "One layer: 0 or −1" : `0 to ${layers - 1}; negative counts from the end (−1 = last)`;

  const headOptions = [
    { value: "mean", label: "Mean of heads" }, { value: "max", label: "Max over heads" }, { value: "min", label: "Min over heads" },
    ...Array.from({ length: heads }, (_, i) => ({ value: String(i), label: `Head ${i}` })),
  ];
  setOptions(c.head, headOptions);

  // A new kind of source starts from its default view (overlay for images, heatmap otherwise).
  const views = VIEWS[kind].map(([value, label]) => ({ value, label }));
  setOptions(c.view, views, kind === configuredKind ? c.view.value : views[0].value);
  configuredKind = kind;
  setOptions(c.method, [
    { value: "attention", label: "Attention" },
    { value: "rollout", label: "Rollout" },
    { value: "gradient", label: kind === "weights" ? "Gradient (needs a model)" : "Gradient", disabled: kind === "weights" },
  ]);
  configureQuery(source);
  show(byId("text-options"), kind === "text");
  show(c.interpolation.closest(".field"), kind === "vision");
  updateDependents();
}

/** Query choices: CLS or mean for images; the whole matrix or one token for text and weights. */
export function configureQuery(source) {
  const select = byId("query");
  if (source.kind === "vision") {
    setOptions(select, [{ value: "", label: "CLS token" }, { value: "mean", label: "Mean of queries" }]);
    return;
  }
  const tokens = source.tokens ?? [];
  const count = source.queries ?? tokens.length;
  const options = [{ value: "", label: "Every query" }];
  for (let i = 0; i < count; i += 1) options.push({ value: String(i), label: tokens[i] !== undefined ? `${i}: ${tokens[i]}` : `Token ${i}` });
  setOptions(select, options);
}

/** Show the controls that matter for the current view and method only. */
export function updateDependents() {
  const c = inputs();
  show(byId("alpha-field"), c.view.value === "overlay");
  byId("alpha-out").textContent = Number(c.alpha.value).toFixed(2);
  show(c.discard_ratio.closest(".field"), c.method.value === "rollout");
  // A grid shows every head: the head choice does not apply.
  c.head.disabled = c.view.value === "grid";
  byId("colormap-swatch").className = `swatch cm-${c.colormap.value}`;
  byId("method-hint").textContent = METHOD_HINTS[c.method.value] ?? "";
}

/** Fill the colormap select once. */
export function initColormaps() {
  setOptions(byId("colormap"), COLORMAPS.map((name) => ({ value: name, label: name })), "viridis");
}

function numberOrText(text) {
  const trimmed = text.trim();
  return trimmed !== "" && !Number.isNaN(Number(trimmed)) ? Number(trimmed) : trimmed;
}

/**
 * Request fields from the controls for a source kind. Values go to the server as typed, so that
 * it, not the page, decides what is valid (its message then shows next to the field).
 */
export function readOptions(kind) {
  const c = inputs();
  const fields = {};
  if (c.layer.value !== "" || c.layer.validity.badInput) fields.layer = numberOrText(c.layer.value);
  if (c.view.value !== "grid") fields.head = /^\d+$/.test(c.head.value) ? Number(c.head.value) : c.head.value;
  if (c.method.value !== "attention") fields.method = c.method.value;
  fields.view = c.view.value;
  if (c.query.value !== "") fields.query = numberOrText(c.query.value);
  if (c.colormap.value !== "viridis") fields.colormap = c.colormap.value;
  if (c.view.value === "overlay") fields.alpha = Number(c.alpha.value);
  if (c.size.value !== "512") fields.size = numberOrText(c.size.value);
  if (kind === "vision" && c.interpolation.value !== "bilinear") fields.interpolation = c.interpolation.value;
  if (c.method.value === "rollout" && c.discard_ratio.value !== "0") fields.discard_ratio = numberOrText(c.discard_ratio.value);
  if (c.annotate.checked) fields.annotate = true;
  if (kind === "text" && c.mask_special.checked) fields.mask_special = true;
  if (kind === "text" && c.merge_subwords.checked) fields.merge_subwords = true;
  if (c.normalize.value !== "minmax") fields.normalize = c.normalize.value;
  if (kind !== "vision" && c.clip_special.checked) fields.clip_special = true;
  return fields;
}

/**
 * Leave special tokens out of the colour range for long inputs, unless the user has set the box
 * (`tokens`: the token count when known, else an estimate from the text).
 */
export function autoClipSpecial(tokens) {
  const box = byId("clip_special");
  if (box.dataset.touched === "true") return;
  box.checked = tokens > LONG_INPUT_TOKENS;
}

/** Make token `index` the query (null: every query); adds the choice when the list is shorter. */
export function setQuery(index) {
  const select = byId("query");
  const value = index === null ? "" : String(index);
  if (![...select.options].some((option) => option.value === value)) {
    select.append(new Option(`Token ${index}`, value));
  }
  select.value = value;
}

/** Show one head as a heatmap (from a click on its thumbnail in the grid). */
export function setHead(index) {
  const c = inputs();
  c.view.value = "heatmap";
  if (![...c.head.options].some((option) => option.value === String(index))) c.head.append(new Option(`Head ${index}`, String(index)));
  c.head.value = String(index);
  updateDependents();
}

// Request fields shown at another control's error slot.
const ERROR_SLOT = { key: "query", target: "method", target_text: "method", text_pair: "text" };

/** The visible error slot for a field (opening a closed <details> around it), or null. */
function errorSlot(field) {
  const error = document.getElementById(`${ERROR_SLOT[field] ?? field}-error`);
  if (!error) return null;
  const details = error.closest("details");
  if (details) details.open = true;
  return error.parentElement.closest("[hidden]") ? null : error;
}

/** Show `message` next to the control for `field`; returns the error element, or null when no such control is visible. */
export function showFieldError(field, message) {
  const error = field ? errorSlot(field) : null;
  if (!error) return null;
  error.textContent = message;
  error.hidden = false;
  const container = error.closest(".field");
  container?.classList.add("has-error");
  const own = document.getElementById(field);
  const input = own && container?.contains(own) ? own : container?.querySelector("input, select, textarea");
  input?.setAttribute("aria-invalid", "true");
  return error;
}

/** Remove every field error. */
export function clearFieldErrors() {
  for (const error of document.querySelectorAll(".field-error")) {
    error.hidden = true;
    error.textContent = "";
  }
  for (const field of document.querySelectorAll(".field.has-error")) field.classList.remove("has-error");
  for (const input of document.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}
