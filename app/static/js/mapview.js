// One rendered map on the page: the PNG, a value readout under the pointer or keyboard cursor,
// the provenance the server reported, a legend and a download link.

import { byId, el, formatValue } from "./dom.js";
import { cellAt, cellBox, describeCell, layoutOf, moveCell } from "./layout.js";

const IDLE_READOUT = "Hover or click the map to read values; arrow keys move a cursor.";
const MAX_AXIS_LABELS = 48;

/** Token labels along the axes of a matrix or strip: {rows, cols}, each a list or null. */
export function axisLabels(doc, annotated) {
  const meta = doc?.meta;
  if (!meta || annotated || meta.grid || meta.view === "grid" || meta.view === "trace") return { rows: null, cols: null };
  const keys = meta.key_tokens ?? meta.tokens ?? null;
  const fits = (list, count) => (Array.isArray(list) && list.length === count && count <= MAX_AXIS_LABELS ? list : null);
  if (doc.shape.length === 1) return { rows: null, cols: fits(keys, doc.shape[0]) };
  if (doc.shape.length === 2) return { rows: fits(meta.tokens, doc.shape[0]), cols: fits(keys, doc.shape[1]) };
  return { rows: null, cols: null };
}

function fillAxis(axis, labels, property) {
  axis.hidden = labels === null;
  if (labels === null) return;
  axis.style[property] = `repeat(${labels.length}, minmax(0, 1fr))`;
  axis.style.setProperty("--n", String(labels.length));
  axis.replaceChildren(...labels.map((label) => el("span", { text: label, title: label })));
}

function serverTime(headers) {
  const timing = headers.get("Server-Timing");
  if (!timing) return null;
  let total = 0;
  for (const part of timing.split(",")) {
    const match = /dur=([\d.]+)/.exec(part);
    if (match) total += Number(match[1]);
  }
  return total > 0 ? `${Math.round(total)} ms` : null;
}

function layersText(meta) {
  const layers = meta.layers ?? [];
  const of = meta.num_layers ? ` of ${meta.num_layers}` : "";
  if (layers.length === 0) return null;
  if (layers.length === 1) return `${layers[0]}${of}`;
  return `${layers[0]}–${layers[layers.length - 1]}${of}`;
}

function headsText(meta) {
  const heads = meta.heads;
  if (Array.isArray(heads)) return `all ${heads.length}, one panel each`;
  if (typeof heads === "string") return `${heads} over ${meta.num_heads ?? "all"} heads`;
  return heads === undefined || heads === null ? null : `head ${heads}`;
}

function queryText(meta) {
  if (meta.query === null || meta.query === undefined) return meta.grid ? null : "every token (matrix)";
  if (typeof meta.query === "number") {
    const labels = meta.key_tokens ?? meta.tokens;
    return labels?.[meta.query] ? `${meta.query} “${labels[meta.query]}”` : String(meta.query);
  }
  return meta.query === "cls" ? "CLS token" : `${meta.query} of the queries`;
}

/** Provenance rows [term, description] from a JSON answer's meta, else from the PNG's headers. */
export function provenance(doc, headers) {
  const rows = [];
  const meta = doc?.meta;
  if (meta) {
    if (meta.prediction) {
      const p = meta.prediction;
      if (p.label !== null && typeof p.probability === "number") {
        rows.push(["Prediction", `${p.label} (${(p.probability * 100).toFixed(1)} %)`]);
      }
      if (p.score_kind !== "probability") {
        const target = p.target_label !== null ? ` of ${p.target_label}` : "";
        rows.push(["Explained score", `${p.score_kind.replace("_", " ")}${target}: ${formatValue(p.score)}`]);
      }
    }
    rows.push(["Method", `${meta.method}${meta.semantics === "relevance" ? " (relevance)" : ""}`]);
    rows.push(["Layer", layersText(meta)]);
    rows.push(["Heads", headsText(meta)]);
    rows.push(["Query", queryText(meta)]);
    if (meta.grid) {
      const dropped = meta.prefix_tokens_dropped ? `, ${meta.prefix_tokens_dropped} prefix token(s) dropped` : "";
      rows.push(["Patches", `${meta.grid[0]} × ${meta.grid[1]}${dropped}`]);
    }
    rows.push(["Value range", meta.value_range.map(formatValue).join(" – ")]);
    if (typeof meta.region_mass === "number") {
      const share = typeof meta.region_area_share === "number" ? ` (the box is ${(meta.region_area_share * 100).toFixed(0)} % of the picture)` : "";
      rows.push(["In the object box", `${(meta.region_mass * 100).toFixed(0)} % of the map${share}`]);
    }
  } else {
    rows.push(["Method", headers.get("X-Attnmap-Method")]);
    rows.push(["Layers", headers.get("X-Attnmap-Layers")]);
    rows.push(["Heads", headers.get("X-Attnmap-Heads")]);
    rows.push(["Value range", headers.get("X-Attnmap-Value-Range")?.replace(",", " – ")]);
  }
  rows.push(["Server time", serverTime(headers)]);
  rows.push(["Request id", headers.get("X-Request-ID")]);
  return rows.filter(([, value]) => value);
}

export class MapView {
  constructor(parent) {
    const fragment = byId("map-template").content.cloneNode(true);
    this.root = fragment.querySelector(".map");
    this.title = this.root.querySelector(".map-title");
    this.badge = this.root.querySelector(".map-badge");
    this.frame = this.root.querySelector(".map-frame");
    this.img = this.root.querySelector(".map-img");
    this.cursor = this.root.querySelector(".map-cursor");
    this.readout = this.root.querySelector(".readout");
    this.meta = this.root.querySelector(".meta");
    this.download = this.root.querySelector(".download");
    this.legend = this.root.querySelector(".legend");
    this.axisX = this.root.querySelector(".axis-x");
    this.axisY = this.root.querySelector(".axis-y");
    this.plot = this.root.querySelector(".map-plot");
    this.url = null;
    this.doc = null;
    this.layout = null;
    this.cell = null;
    this.pinned = false;
    this.annotated = false;
    parent.append(this.root);
    this.frame.addEventListener("pointermove", (event) => this.onPointer(event, false));
    this.frame.addEventListener("click", (event) => this.onPointer(event, true));
    this.frame.addEventListener("pointerleave", () => { if (!this.pinned) this.clearCell(); });
    this.frame.addEventListener("keydown", (event) => this.onKey(event));
  }

  setTitle(text, badge = "") {
    this.title.textContent = text;
    this.badge.textContent = badge;
    this.badge.hidden = !badge;
  }

  setBusy(busy) {
    this.root.classList.toggle("is-stale", busy);
  }

  /** Show a rendered PNG; `doc` is the matching format=json answer (null when unavailable). */
  async show({ blob, headers, doc, annotated, colormap, filename, description }) {
    const url = URL.createObjectURL(blob);
    this.img.src = url;
    try {
      await this.img.decode();
    } catch {
      // decode() can reject for images replaced while decoding; the load event still fires.
    }
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = url;
    if (this.img.naturalHeight) this.plot.style.setProperty("--aspect", String(this.img.naturalWidth / this.img.naturalHeight));
    // Small pictures are shown larger than they are: keep their pixels crisp instead of blurred.
    this.img.classList.toggle("is-upscaled", this.img.naturalWidth < 160);
    this.doc = doc;
    this.annotated = annotated;
    this.layout = null;
    this.pinned = false;
    this.img.alt = description;
    this.frame.setAttribute("aria-label", `${description}. Arrow keys read values.`);
    this.download.href = url;
    this.download.download = filename;
    this.showLegend(doc, headers, colormap);
    const axes = axisLabels(doc, annotated);
    fillAxis(this.axisX, axes.cols, "gridTemplateColumns");
    fillAxis(this.axisY, axes.rows, "gridTemplateRows");
    this.meta.replaceChildren(...provenance(doc, headers).flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]));
    this.clearCell();
  }

  showLegend(doc, headers, colormap) {
    const range = doc?.meta?.value_range ?? headers.get("X-Attnmap-Value-Range")?.split(",").map(Number);
    const bar = this.legend.querySelector(".legend-bar");
    bar.className = `legend-bar swatch cm-${colormap}`;
    this.legend.querySelector(".legend-min").textContent = range ? formatValue(range[0]) : "";
    this.legend.querySelector(".legend-max").textContent = range ? formatValue(range[1]) : "";
  }

  currentLayout() {
    if (!this.layout) this.layout = layoutOf(this.doc, this.img.naturalWidth, this.img.naturalHeight, { annotated: this.annotated });
    return this.layout;
  }

  onPointer(event, isClick) {
    const layout = this.currentLayout();
    if (!layout || (this.pinned && !isClick)) return;
    const rect = this.img.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * this.img.naturalWidth;
    const y = ((event.clientY - rect.top) / rect.height) * this.img.naturalHeight;
    const cell = cellAt(layout, x, y);
    if (isClick) this.pinned = cell !== null && !this.pinned;
    if (cell) this.showCell(cell);
    else this.clearCell("Outside the area the model saw.");
  }

  onKey(event) {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (event.key === "Escape") {
      this.pinned = false;
      this.clearCell();
      return;
    }
    const move = moves[event.key];
    if (!move) return;
    const layout = this.currentLayout();
    if (!layout) return;
    event.preventDefault();
    const start = this.cell ?? { panel: 0, row: 0, col: 0 };
    this.pinned = true;
    this.showCell(this.cell ? moveCell(layout, start, move[0], move[1]) : start);
  }

  showCell(cell) {
    const layout = this.currentLayout();
    this.cell = cell;
    const value = layout.value(cell.panel, cell.row, cell.col);
    this.readout.replaceChildren(
      el("span", { class: "readout-where", text: describeCell(this.doc, layout, cell) }),
      el("strong", { class: "readout-value", text: formatValue(value) }),
    );
    this.readout.classList.toggle("is-pinned", this.pinned);
    const box = cellBox(layout, cell);
    const width = this.img.naturalWidth;
    const height = this.img.naturalHeight;
    this.cursor.style.left = `${(box.x / width) * 100}%`;
    this.cursor.style.top = `${(box.y / height) * 100}%`;
    this.cursor.style.width = `${(box.w / width) * 100}%`;
    this.cursor.style.height = `${(box.h / height) * 100}%`;
    this.cursor.hidden = false;
  }

  clearCell(message = IDLE_READOUT) {
    this.cell = null;
    this.cursor.hidden = true;
    this.readout.classList.remove("is-pinned");
    if (!this.doc) message = "Values are not available for this map.";
    else if (this.annotated) message = "Turn off “Axes, labels and colorbar” to read values by pointing.";
    this.readout.textContent = message;
  }

  destroy() {
    if (this.url) URL.revokeObjectURL(this.url);
    this.root.remove();
  }
}
