// attnmap's web page: pick a model and an input, render through POST /visualize, read values.
// Everything here goes through the public API (GET /models, GET /examples, POST /visualize),
// by URLs relative to the page, so a curl user can do all of it too.

import { apiUrl, getJson, setToken, visualize } from "./js/api.js";
import {
  autoClipSpecial, clearFieldErrors, configure, configureQuery, initColormaps, inputs, readOptions, setHead, setQuery,
  showFieldError, updateDependents,
} from "./js/controls.js";
import { copyCurl, showCurl } from "./js/curlbox.js";
import { byId, debounce, el, show } from "./js/dom.js";
import { renderExamples, renderQuickStarts, shortcutExample } from "./js/examples.js";
import { buildJobs, downloadName } from "./js/jobs.js";
import { MapView } from "./js/mapview.js";
import { image, initImageInput, readTokens, setImage, setWeightsFile, setWeightsText, weights, weightsSummary } from "./js/sources.js";
import { announce, clearMessages, showError, startProgress, stopProgress } from "./js/status.js";
import { SAMPLE_TOKENS, dims, sampleWeights } from "./js/weights.js";

const RAW = "raw-weights";
const NARROW = window.matchMedia("(max-width: 959px)");

const state = {
  models: [],
  examples: { images: [], sentences: [], comparisons: [] },
  views: [],
  controller: null,
  hasResult: false,
  tokens: null,
};

// ---------------------------------------------------------------- model and source

function selectedModel() {
  return state.models.find((model) => model.name === byId("model").value) ?? null;
}

function firstModel(kind) {
  return state.models.find((model) => model.kind === kind) ?? null;
}

function sourceKind() {
  return selectedModel()?.kind ?? "weights";
}

/** The comparison pair offered for the selected model (vision models listed in /examples). */
function comparison() {
  const model = selectedModel();
  if (!model || model.kind !== "vision") return null;
  return state.examples.comparisons.find((pair) => pair.models.includes(model.name)) ?? null;
}

/** What the controls should offer for the current source. */
function sourceDescription() {
  const kind = sourceKind();
  const model = selectedModel();
  if (model) return { kind, layers: model.layers, heads: model.heads, tokens: kind === "text" ? state.tokens : null };
  const shape = weights.shape ? dims(weights.shape) : { layers: 1, heads: 1, queries: 0 };
  return { kind, ...shape, tokens: readTokens() };
}

function modelHint(model) {
  if (!model) return "Your own attention weights: [Q,K], [H,Q,K] or [L,H,Q,K].";
  const size = model.input_size ? ` · input ${model.input_size.join("×")}` : "";
  const about = model.description ? `${model.description}. ` : "";
  return `${about}${model.layers} layers · ${model.heads} heads${size} · ${model.device}`;
}

function sourceReady() {
  const kind = sourceKind();
  if (kind === "vision") return image.current !== null;
  if (kind === "text") return byId("text").value.trim() !== "";
  return (weights.text !== null || weights.file !== null) && !weights.error;
}

function onModelChange() {
  clearFieldErrors();
  const kind = sourceKind();
  show(byId("source-image"), kind === "vision");
  show(byId("source-text"), kind === "text");
  show(byId("source-weights"), kind === "weights");
  byId("model-hint").textContent = modelHint(selectedModel());
  const pair = comparison();
  show(byId("compare-box"), pair !== null);
  if (pair) {
    byId("compare-title").textContent = `Compare ${pair.models.join(" and ")} side by side`;
    byId("compare-note").textContent = pair.note ?? "";
  }
  configure(sourceDescription());
  if (state.hasResult && sourceReady()) render();
}

function selectModel(name) {
  byId("model").value = name;
  onModelChange();
}

// ---------------------------------------------------------------- rendering

/** Tokens of the current input: known from the last answer, else estimated from the text. */
function tokenCount() {
  const kind = sourceKind();
  if (kind === "text") {
    const words = byId("text").value.trim().split(/\s+/).filter(Boolean).length;
    return Math.max(state.tokens?.length ?? 0, Math.round(words * 1.2) + 2);
  }
  if (kind === "weights") return weights.shape ? weights.shape[weights.shape.length - 1] : 0;
  return 0;
}

function currentJobs() {
  const kind = sourceKind();
  autoClipSpecial(tokenCount());
  const options = readOptions(kind);
  const pair = comparison();
  if (pair && byId("compare").checked) return buildJobs(kind, options, pair.models, pair.labels ?? []);
  return buildJobs(kind, options, selectedModel() ? [selectedModel().name] : []);
}

/** The PNG and, in parallel, the same request as format=json (for reading values). */
async function runJob(job, signal) {
  const keepAbort = (error) => {
    if (error.name === "AbortError") throw error;
    return null; // the map still shows; only the value readout is unavailable
  };
  const [png, json] = await Promise.all([
    visualize(job.request, "png", signal),
    visualize(job.request, "json", signal).catch(keepAbort),
  ]);
  return { ...png, doc: json?.doc ?? null };
}

function ensureViews(count) {
  const container = byId("maps");
  while (state.views.length > count) state.views.pop().destroy();
  const handlers = {
    // A click on a token (axis label or text view) makes it the query; on a grid thumbnail, shows that head.
    onQuery: (index) => {
      setQuery(index);
      render();
    },
    onHead: (head) => {
      setHead(head);
      render();
    },
  };
  while (state.views.length < count) state.views.push(new MapView(container, handlers));
  container.classList.toggle("is-compare", count > 1);
}

function setViewsBusy(busy) {
  for (const view of state.views) view.setBusy(busy);
}

/**
 * Render the current page state; a newer render or the Cancel button aborts this one. `reveal`
 * scrolls the result into view on narrow screens (for actions that start from the controls,
 * not for option tweaks made while looking at the map).
 */
async function render({ reveal = false } = {}) {
  scheduleRender.cancel();
  clearFieldErrors();
  clearMessages();
  const jobs = currentJobs();
  if (jobs.length === 0) return;
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  if (state.views.length !== jobs.length) ensureViews(jobs.length);
  startProgress(jobs.map((job) => job.model ?? "raw weights").join(" and "));
  setViewsBusy(true);
  showCurl(jobs);
  let failed = false;
  try {
    const results = await Promise.all(jobs.map((job) => runJob(job, controller.signal)));
    if (state.controller !== controller) return;
    const colormap = inputs().colormap.value;
    const annotated = inputs().annotate.checked;
    await Promise.all(results.map((result, i) => {
      state.views[i].setTitle(jobs[i].model ?? "Raw weights", jobs[i].badge);
      return state.views[i].show({ ...result, annotated, colormap, filename: downloadName(jobs[i], result.doc), description: jobs[i].description });
    }));
    state.hasResult = true;
    show(byId("empty"), false);
    show(byId("maps"));
    rememberTokens(results[0].doc);
    if (reveal) keepInView();
  } catch (error) {
    if (state.controller !== controller) return;
    failed = error.name !== "AbortError";
    if (failed) showError(error, { hasMap: state.hasResult });
    else announce(state.hasResult ? "Cancelled. The previous map is still shown." : "Cancelled.");
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      stopProgress();
      // After a failure the map no longer matches the controls: it stays visible, dimmed.
      setViewsBusy(failed);
    }
  }
}

const scheduleRender = debounce(() => render(), 350);

/**
 * Bring the result into view after Render: on a phone it is below the controls, on a wide
 * screen it sits at the top of its column while the Render button is at the bottom of the form.
 */
function keepInView() {
  const box = byId("result").getBoundingClientRect();
  const visible = box.top >= 0 && box.top < window.innerHeight * 0.6;
  if (!visible || NARROW.matches) byId("result").scrollIntoView({ block: "start" });
}

/** Offer the tokens of the last answer as query choices (text and raw weights). */
function rememberTokens(doc) {
  const kind = sourceKind();
  if (!doc || kind === "vision") return;
  const tokens = doc.meta.key_tokens ?? doc.meta.tokens ?? null;
  if (kind === "text") state.tokens = tokens;
  const count = tokens?.length ?? (weights.shape ? dims(weights.shape).queries : 0);
  configureQuery({ kind, tokens, queries: count });
}

// ---------------------------------------------------------------- one-click starts

async function useExample(example) {
  const vision = selectedModel()?.kind === "vision" ? selectedModel() : firstModel("vision");
  if (!vision) return;
  if (selectedModel() !== vision) selectModel(vision.name);
  const response = await fetch(apiUrl(example.url));
  if (!response.ok) {
    showFieldError("image", `could not load the example ${example.name}`);
    return;
  }
  setImage(await response.blob(), example.name, { region: example.box ?? null, label: example.label, example: example.name });
  await render({ reveal: true });
}

async function useSentence(sentence) {
  const text = firstModel("text");
  if (!text) return;
  byId("text").value = sentence;
  if (selectedModel() !== text) selectModel(text.name);
  await render({ reveal: true });
}

async function useSampleWeights() {
  byId("weights-text").value = JSON.stringify(sampleWeights()).replaceAll("],[", "],\n[");  // a row per line
  byId("tokens").value = SAMPLE_TOKENS.join(", ");
  onWeightsText();
  if (byId("model").value !== RAW) selectModel(RAW);
  await render({ reveal: true });
}

async function useShortcutDemo() {
  const pair = state.examples.comparisons[0];
  const example = shortcutExample(state.examples.images);
  if (!pair || !example) return;
  byId("compare").checked = true;
  selectModel(pair.models[0]);
  // Gradient-weighted attention separates the two models most clearly (the shortcut model puts
  // most of its map on the marker corner, the clean one little); plain attention of the last
  // layer is drawn to any bright corner in both.
  if (pair.method) byId("method").value = pair.method;
  updateDependents();
  await useExample(example);
}

function quickStartCards() {
  const { images, sentences, comparisons } = state.examples;
  const vision = firstModel("vision");
  const text = firstModel("text");
  const cards = [];
  if (vision && images.length) {
    cards.push({ label: "An example image", detail: `${vision.name} · overlay on a built-in picture`, action: () => useExample(images[0]) });
  }
  if (comparisons.length && images.length) {
    cards.push({ label: "Shortcut demo", detail: "clean vs shortcut model on the same picture", action: useShortcutDemo });
  }
  if (text && sentences.length) {
    cards.push({ label: `“${sentences[0]}”`, detail: `${text.name} · token-to-token attention`, action: () => useSentence(sentences[0]) });
  }
  cards.push({ label: "Sample weights", detail: "raw attention [3 layers, 4 heads, 7 tokens]", action: useSampleWeights });
  return cards;
}

// ---------------------------------------------------------------- loading

async function loadModels() {
  try {
    state.models = (await getJson("models")).models;
  } catch (error) {
    state.models = [];
    showError(error);
  }
  const select = byId("model");
  const previous = select.value;
  const group = (label, kind) => el("optgroup", { label }, state.models.filter((m) => m.kind === kind)
    .map((m) => el("option", { value: m.name, text: m.name })));
  const groups = [];
  if (firstModel("vision")) groups.push(group("Vision models", "vision"));
  if (firstModel("text")) groups.push(group("Text models", "text"));
  groups.push(el("optgroup", { label: "No model" }, [el("option", { value: RAW, text: "Raw attention weights" })]));
  select.replaceChildren(...groups);
  const fallback = (firstModel("vision") ?? firstModel("text"))?.name ?? RAW;
  select.value = [...select.options].some((o) => o.value === previous) ? previous : fallback;
}

async function loadExamples() {
  try {
    state.examples = await getJson("examples");
  } catch {
    state.examples = { images: [], sentences: [], comparisons: [] };
  }
}

async function loadAll() {
  await Promise.all([loadModels(), loadExamples()]);
  renderExamples(state.examples, { onImage: useExample, onSentence: useSentence });
  renderQuickStarts(quickStartCards());
  onModelChange();
}

// ---------------------------------------------------------------- wiring

function onWeightsText() {
  const found = setWeightsText(byId("weights-text").value);
  clearFieldErrors();
  if (weights.error) showFieldError("weights", weights.error);
  byId("weights-hint").textContent = weightsSummary() ?? "";
  if (found) configure(sourceDescription());
}

async function onWeightsFile() {
  const file = byId("weights-file").files[0];
  if (!file) return;
  clearFieldErrors();
  try {
    await setWeightsFile(file);
  } catch (error) {
    showFieldError("weights", error.message);
    return;
  }
  byId("weights-hint").textContent = weightsSummary() ?? "";
  configure(sourceDescription());
  await render({ reveal: true });
}

function onOptionChange() {
  updateDependents();
  if (state.hasResult) scheduleRender();
}

function wire() {
  byId("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    render({ reveal: true });
  });
  byId("model").addEventListener("change", onModelChange);
  byId("cancel").addEventListener("click", () => state.controller?.abort());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller && !event.target.closest?.(".map-frame")) state.controller.abort();
  });
  for (const input of Object.values(inputs())) {
    input.addEventListener("change", onOptionChange);
    if (input.type === "number" || input.type === "range") input.addEventListener("input", onOptionChange);
  }
  byId("compare").addEventListener("change", () => {
    if (image.current) render();
  });
  initImageInput((blob, name) => {
    clearFieldErrors();
    setImage(blob, name);
    render({ reveal: true });
  }, (message) => showFieldError("image", message));
  byId("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      render();
    }
  });
  byId("weights-text").addEventListener("input", debounce(onWeightsText, 300));
  byId("weights-file").addEventListener("change", onWeightsFile);
  byId("tokens").addEventListener("change", () => {
    configure(sourceDescription());
    if (state.hasResult) scheduleRender();
  });
  byId("sample-weights").addEventListener("click", useSampleWeights);
  byId("copy-curl").addEventListener("click", copyCurl);
  byId("clip_special").addEventListener("change", () => { byId("clip_special").dataset.touched = "true"; });
  byId("token").addEventListener("change", async () => {
    setToken(byId("token").value);
    clearMessages();
    await loadAll();
  });
}

async function main() {
  initColormaps();
  wire();
  await loadAll();
  document.documentElement.dataset.ready = "true";
}

main();
