// attnmap's web page: pick a model and an input, render through POST /visualize, read values.
// Everything here goes through the public API (GET /models, GET /examples, POST /visualize).

import { ApiError, apiUrl, getJson, hasToken, setToken, visualize } from "./js/api.js";
import {
  clearFieldErrors, configure, configureQuery, initColormaps, inputs, readOptions, showFieldError, updateDependents,
} from "./js/controls.js";
import { byId, debounce, el, show } from "./js/dom.js";
import { MapView } from "./js/mapview.js";
import { toCurl } from "./js/request.js";
import { image, initImageInput, readTokens, setImage, setWeightsFile, setWeightsText, weights, weightsSummary } from "./js/sources.js";
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
  curlBody: null,
};

// ---------------------------------------------------------------- model and source

function selectedModel() {
  return state.models.find((model) => model.name === byId("model").value) ?? null;
}

function sourceKind() {
  return selectedModel()?.kind ?? "weights";
}

function comparison() {
  const model = selectedModel();
  if (!model || model.kind !== "vision") return null;
  return state.examples.comparisons.find((pair) => pair.models.includes(model.name)) ?? null;
}

function comparing() {
  return comparison() !== null && byId("compare").checked;
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

function sourceReady() {
  const kind = sourceKind();
  if (kind === "vision") return image.current !== null;
  if (kind === "text") return byId("text").value.trim() !== "";
  return (weights.text !== null || weights.file !== null) && !weights.error;
}

function selectModel(name) {
  byId("model").value = name;
  onModelChange();
}

function firstModel(kind) {
  return state.models.find((model) => model.kind === kind) ?? null;
}

// ---------------------------------------------------------------- requests

/** The visualize requests for the current page state ([] after reporting what is missing). */
function buildJobs() {
  const kind = sourceKind();
  const options = readOptions(kind);
  if (kind === "vision") {
    if (!image.current) {
      showFieldError("image", "Choose, drop or pick an example image first.");
      return [];
    }
    const pair = comparing() ? comparison() : null;
    const names = pair ? pair.models : [selectedModel().name];
    return names.map((name, i) => ({
      model: name,
      badge: pair?.labels?.[i] ?? "",
      request: {
        fields: { model: name, ...options, ...(image.current.region ? { region: image.current.region } : {}) },
        file: { part: "image", blob: image.current.blob, filename: image.current.filename },
        weightsText: null,
      },
    }));
  }
  if (kind === "text") {
    const text = byId("text").value;
    if (text.trim() === "") {
      showFieldError("text", "Type a text first.");
      return [];
    }
    return [{ model: selectedModel().name, badge: "", request: { fields: { model: selectedModel().name, text, ...options }, file: null, weightsText: null } }];
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
  return [{ model: null, badge: "", request: { fields, file, weightsText: file ? null : weights.text } }];
}

async function runJob(job, signal) {
  const keepAbort = (error) => {
    if (error.name === "AbortError") throw error;
    return null;
  };
  const [png, json] = await Promise.all([
    visualize(job.request, "png", signal),
    visualize(job.request, "json", signal).catch(keepAbort),
  ]);
  return { ...png, doc: json?.doc ?? null };
}

function describe(job) {
  const f = job.request.fields;
  const head = typeof f.head === "number" ? `head ${f.head}` : `${f.head} of heads`;
  const layer = f.layer === undefined ? "last layer" : `layer ${f.layer}`;
  return `${f.view} of ${job.model ?? "raw weights"}, ${f.method ?? "attention"}, ${layer}, ${head}`;
}

function filename(job) {
  const f = job.request.fields;
  const safe = (text) => String(text).replace(/[^A-Za-z0-9._-]/g, "_");
  return `attnmap-${safe(job.model ?? "weights")}-${safe(f.view)}-layer${safe(f.layer ?? -1)}-head${safe(f.head)}.png`;
}

// ---------------------------------------------------------------- rendering

function ensureViews(count) {
  const container = byId("maps");
  while (state.views.length > count) state.views.pop().destroy();
  while (state.views.length < count) state.views.push(new MapView(container));
  container.classList.toggle("is-compare", count > 1);
}

let progressTimer = 0;

function startProgress(jobs) {
  const started = performance.now();
  const what = jobs.map((job) => job.model ?? "raw weights").join(" and ");
  const text = byId("progress-text");
  const tick = () => {
    text.textContent = `Rendering ${what}… ${((performance.now() - started) / 1000).toFixed(1)} s`;
  };
  tick();
  clearInterval(progressTimer);
  progressTimer = setInterval(tick, 100);
  show(byId("progress"));
  byId("result").setAttribute("aria-busy", "true");
  for (const view of state.views) view.setBusy(true);
}

function stopProgress() {
  clearInterval(progressTimer);
  show(byId("progress"), false);
  byId("result").removeAttribute("aria-busy");
  for (const view of state.views) view.setBusy(false);
}

const scheduleRender = debounce(() => render(), 350);

/**
 * Render the current page state. `reveal` scrolls the result into view on narrow screens (for
 * actions that start from the controls, not for option tweaks while looking at the map).
 */
async function render({ reveal = false } = {}) {
  scheduleRender.cancel();
  clearFieldErrors();
  hideAlert();
  const jobs = buildJobs();
  if (jobs.length === 0) return;
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  if (state.views.length !== jobs.length) ensureViews(jobs.length);
  startProgress(jobs);
  showCurl(jobs);
  let failed = false;
  try {
    const results = await Promise.all(jobs.map((job) => runJob(job, controller.signal)));
    if (state.controller !== controller) return;
    const colormap = inputs().colormap.value;
    const annotated = inputs().annotate.checked;
    await Promise.all(results.map((result, i) => {
      state.views[i].setTitle(jobs[i].model ?? "Raw weights", jobs[i].badge);
      return state.views[i].show({ ...result, annotated, colormap, filename: filename(jobs[i]), description: describe(jobs[i]) });
    }));
    state.hasResult = true;
    show(byId("empty"), false);
    show(byId("maps"));
    rememberTokens(results[0].doc);
    if (reveal && NARROW.matches) byId("result").scrollIntoView({ block: "start" });
  } catch (error) {
    if (state.controller !== controller) return;
    failed = error.name !== "AbortError";
    if (failed) showError(error);
    else announce("Cancelled. The previous map is still shown.");
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      stopProgress();
      // A map that no longer matches the controls stays visible, dimmed, after a failure.
      for (const view of state.views) view.setBusy(failed);
    }
  }
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

// ---------------------------------------------------------------- messages

const ALERT_TITLES = {
  0: "Could not reach the server", 400: "The request could not be read", 401: "This server needs an API token",
  404: "Not found", 413: "Too large", 415: "Unsupported input", 422: "Check the input", 503: "The server is busy",
};

function showError(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) {
      const auth = byId("auth");
      show(auth);
      auth.open = true;
    }
    if (error.status !== 401 && showFieldError(error.field, error.message)) {
      announce(`Not rendered: ${error.message}`);
      return;
    }
    const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    const id = error.requestId ? ` (request ${error.requestId})` : "";
    showAlert(ALERT_TITLES[error.status] ?? (error.status >= 500 ? "Server error" : "Request failed"), `${error.message}.${retry}${id}`);
    return;
  }
  showAlert("Something went wrong", String(error.message ?? error));
}

function showAlert(title, body) {
  byId("alert-title").textContent = title;
  byId("alert-body").textContent = body;
  show(byId("alert"));
}

function hideAlert() {
  show(byId("alert"), false);
}

function announce(message) {
  byId("announcer").textContent = message;
}

// ---------------------------------------------------------------- curl

function showCurl(jobs) {
  const commands = jobs.map((job) => toCurl(job.request, apiUrl("visualize"), { token: hasToken(), output: filename(job) }));
  byId("curl").textContent = commands.map((c) => c.command).join("\n\n");
  state.curlBody = commands.find((c) => c.bodyFile)?.bodyFile ?? null;
  const link = byId("curl-body");
  if (link.href) URL.revokeObjectURL(link.href);
  if (state.curlBody) link.href = URL.createObjectURL(new Blob([state.curlBody], { type: "application/json" }));
  else link.removeAttribute("href");
  show(link, state.curlBody !== null);
  show(byId("curl-box"));
}

async function copyCurl() {
  const text = byId("curl").textContent;
  const status = byId("copy-status");
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied to the clipboard.";
  } catch {
    const selection = window.getSelection();
    const range = document.createRange();
    range.selectNodeContents(byId("curl"));
    selection.removeAllRanges();
    selection.addRange(range);
    status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

// ---------------------------------------------------------------- examples and quick starts

async function useExample(example) {
  const vision = selectedModel()?.kind === "vision" ? selectedModel() : firstModel("vision");
  if (!vision) return;
  if (selectedModel() !== vision) selectModel(vision.name);
  const response = await fetch(apiUrl(example.url));
  if (!response.ok) {
    showFieldError("image", `could not load example ${example.name}`);
    return;
  }
  setImage(await response.blob(), example.name, { region: example.box ?? null, label: example.label, example: example.name });
  await render({ reveal: true });
}

async function useSentence(sentence) {
  const text = firstModel("text");
  if (!text) return;
  if (selectedModel() !== text) selectModel(text.name);
  byId("text").value = sentence;
  await render({ reveal: true });
}

async function useSampleWeights() {
  if (byId("model").value !== RAW) selectModel(RAW);
  const text = JSON.stringify(sampleWeights());
  byId("weights-text").value = text;
  byId("tokens").value = SAMPLE_TOKENS.join(", ");
  onWeightsText();
  await render({ reveal: true });
}

async function useShortcutDemo() {
  const pair = state.examples.comparisons[0];
  if (!pair) return;
  selectModel(pair.models[0]);
  byId("compare").checked = true;
  const images = state.examples.images;
  const marked = images.find((example) => example.marker === true || /shortcut|marker/i.test(example.name)) ?? images[0];
  if (marked) await useExample(marked);
}

function renderExamples() {
  const { images, sentences } = state.examples;
  const thumbs = byId("thumbs");
  thumbs.replaceChildren(...images.map((example) => {
    const caption = example.label ?? example.shape ?? example.name.replace(/\.[a-z]+$/i, "");
    const button = el("button", {
      type: "button", class: "thumb", "aria-pressed": "false", dataset: { name: example.name },
      "aria-label": `Use example image ${caption}`,
    }, [el("img", { src: example.url, alt: "", loading: "lazy", width: 64, height: 64 }), el("span", { text: caption })]);
    button.addEventListener("click", () => useExample(example));
    return el("li", {}, [button]);
  }));
  show(byId("image-examples"), images.length > 0);
  const list = byId("sentence-list");
  list.replaceChildren(...sentences.map((sentence) => {
    const button = el("button", { type: "button", class: "chip", text: sentence });
    button.addEventListener("click", () => useSentence(sentence));
    return el("li", {}, [button]);
  }));
  show(byId("samples"), sentences.length > 0);
}

function renderQuickStarts() {
  const quick = byId("quick");
  const buttons = [];
  const add = (label, detail, action) => {
    const button = el("button", { type: "button", class: "quick-card" }, [
      el("span", { class: "quick-label", text: label }), el("span", { class: "quick-detail", text: detail }),
    ]);
    button.addEventListener("click", action);
    buttons.push(button);
  };
  const vision = firstModel("vision");
  const text = firstModel("text");
  if (vision && state.examples.images.length) {
    add("An example image", `${vision.name} · overlay on a built-in picture`, () => useExample(state.examples.images[0]));
  }
  if (state.examples.comparisons.length && state.examples.images.length) {
    add("Shortcut demo", "clean vs shortcut model on the same picture", useShortcutDemo);
  }
  if (text && state.examples.sentences.length) {
    add(`“${state.examples.sentences[0]}”`, `${text.name} · token-to-token attention`, () => useSentence(state.examples.sentences[0]));
  }
  add("Sample weights", "raw attention [3 layers, 4 heads, 7 tokens]", useSampleWeights);
  quick.replaceChildren(...buttons);
}

// ---------------------------------------------------------------- loading

async function loadModels() {
  try {
    const { models } = await getJson("models");
    state.models = models;
  } catch (error) {
    state.models = [];
    showError(error);
  }
  const select = byId("model");
  const previous = select.value;
  const group = (label, kind) => el("optgroup", { label }, state.models.filter((m) => m.kind === kind)
    .map((m) => el("option", { value: m.name, text: m.name })));
  const groups = [];
  if (state.models.some((m) => m.kind === "vision")) groups.push(group("Vision models", "vision"));
  if (state.models.some((m) => m.kind === "text")) groups.push(group("Text models", "text"));
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

// ---------------------------------------------------------------- wiring

function onWeightsText() {
  const found = setWeightsText(byId("weights-text").value);
  clearFieldErrors();
  if (weights.error) showFieldError("weights", weights.error);
  byId("weights-hint").textContent = weightsSummary() ?? "";
  if (found) configure(sourceDescription());
}

function wire() {
  const form = byId("controls");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    render({ reveal: true });
  });
  byId("model").addEventListener("change", onModelChange);
  byId("cancel").addEventListener("click", () => {
    state.controller?.abort();
  });
  for (const input of Object.values(inputs())) {
    input.addEventListener("change", () => {
      updateDependents();
      if (state.hasResult) scheduleRender();
    });
    if (input.type === "number" || input.type === "range") {
      input.addEventListener("input", () => {
        updateDependents();
        if (state.hasResult) scheduleRender();
      });
    }
  }
  byId("compare").addEventListener("change", () => {
    if (image.current) render();
  });
  initImageInput((blob, name) => {
    clearFieldErrors();
    setImage(blob, name);
    render();
  }, (message) => showFieldError("image", message));
  byId("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      render();
    }
  });
  byId("weights-text").addEventListener("input", debounce(onWeightsText, 300));
  byId("weights-file").addEventListener("change", async () => {
    const file = byId("weights-file").files[0];
    if (!file) return;
    clearFieldErrors();
    try {
      await setWeightsFile(file);
      byId("weights-hint").textContent = weightsSummary() ?? "";
      configure(sourceDescription());
      await render();
    } catch (error) {
      showFieldError("weights", error.message);
    }
  });
  byId("tokens").addEventListener("change", () => {
    configure(sourceDescription());
    if (state.hasResult) scheduleRender();
  });
  byId("sample-weights").addEventListener("click", useSampleWeights);
  byId("copy-curl").addEventListener("click", copyCurl);
  byId("token").addEventListener("change", async () => {
    setToken(byId("token").value);
    hideAlert();
    await Promise.all([loadModels(), loadExamples()]);
    renderExamples();
    renderQuickStarts();
    onModelChange();
  });
}

async function main() {
  initColormaps();
  wire();
  await Promise.all([loadModels(), loadExamples()]);
  renderExamples();
  renderQuickStarts();
  onModelChange();
  document.documentElement.dataset.ready = "true";
}

main();
