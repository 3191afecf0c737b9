// One rendered map on the page: the PNG, a value readout under the pointer or keyboard cursor,
// the provenance the server reported, a legend and a download link.

import { byId, el, formatValue } from "./dom.js";
import { cellAt, cellBox, describeCell, layoutOf, moveCell } from "./layout.js";

const IDLE_READOUT = "Hover or click the map to read values; arrow keys move a cursor.";
const TEXT_READOUT = "Hover a token to read its value; click it to make it the query.";
const MAX_AXIS_LABELS = 48;
const ZOOMS = [1, 1.5, 2, 3, 4, 6, 8];

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

/** Token labels as buttons: a click makes that token the query (`onPick(index)`). */
function fillAxis(axis, labels, property, onPick) {
  axis.hidden = labels === null;
  if (labels === null) return;
  axis.style[property] = `repeat(${labels.length}, minmax(0, 1fr))`;
  axis.style.setProperty("--n", String(labels.length));
  axis.replaceChildren(...labels.map((label, index) => {
    const button = el("button", { type: "button", class: "axis-token", text: label, title: `${label}: make it the query`, tabindex: "-1" });
    button.addEventListener("click", () => onPick(index));
    return button;
  }));
}

/** Is `doc` a token-by-token matrix or strip (the maps that have query and key axes)? */
function isTokenMap(doc) {
  const meta = doc?.meta;
  return Boolean(meta && !meta.grid && (meta.view === "heatmap") && (doc.shape.length === 1 || doc.shape.length === 2));
}

/** The token whose box (text view, PNG pixels) holds (x, y), or null. */
function tokenAt(boxes, x, y) {
  for (let i = 0; i < boxes.length; i += 1) {
    const [bx, by, bw, bh] = boxes[i];
    if (x >= bx && x < bx + bw && y >= by && y < by + bh) return i;
  }
  return null;
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
  if (meta.query === null || meta.query === undefined) {
    if (meta.view === "text") return "none: the attention each token receives";
    return meta.grid ? null : "every token (matrix)";
  }
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
    if (Array.isArray(meta.colour_range)) rows.push(["Colour range", `${meta.colour_range.map(formatValue).join(" – ")} (clipped beyond)`]);
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
  /** `handlers`: {onQuery(index | null), onHead(index)}, called when a token or a head thumbnail is clicked. */
  constructor(parent, handlers = {}) {
    this.handlers = { onQuery: () => {}, onHead: () => {}, ...handlers };
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
    this.scroller = this.root.querySelector(".map-scroll");
    this.titleX = this.root.querySelector(".axis-title-x");
    this.titleY = this.root.querySelector(".axis-title-y");
    this.headPicks = this.root.querySelector(".head-picks");
    this.zoomBox = this.root.querySelector(".zoom");
    this.zoom = 1;
    this.token = null;
    this.root.querySelector(".zoom-in").addEventListener("click", () => this.setZoom(this.nextZoom(1)));
    this.root.querySelector(".zoom-out").addEventListener("click", () => this.setZoom(this.nextZoom(-1)));
    this.root.querySelector(".zoom-fit").addEventListener("click", () => this.setZoom(1));
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
    const pick = (index) => this.handlers.onQuery(index);
    fillAxis(this.axisX, axes.cols, "gridTemplateColumns", pick);
    fillAxis(this.axisY, axes.rows, "gridTemplateRows", pick);
    // Axis titles for token maps: rows are queries (who attends), columns keys (attended to).
    const tokenMap = isTokenMap(doc) && !annotated;
    this.titleX.hidden = !tokenMap;
    this.titleY.hidden = !tokenMap || doc.shape.length !== 2;
    this.titleX.textContent = doc?.shape.length === 1 && typeof doc.meta.query === "number"
      ? `key (attention from “${(doc.meta.key_tokens ?? [])[doc.meta.query] ?? doc.meta.query}”)` : "key";
    this.isText = doc?.meta?.view === "text" && Array.isArray(doc.meta.boxes);
    this.root.classList.toggle("is-text", this.isText);
    // The text view draws its own colour scale (with the clipped range); the page's would disagree.
    this.legend.hidden = this.isText;
    this.plot.style.setProperty("--natural-width", `${this.img.naturalWidth}px`);
    this.showHeadPicks();
    const zoomable = this.isText || (doc?.shape.length === 2 && !doc.meta.grid) || annotated;
    this.zoomBox.hidden = !zoomable;
    this.setZoom(1);
    this.meta.replaceChildren(...provenance(doc, headers).flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]));
    this.clearCell();
  }

  showLegend(doc, headers, colormap) {
    // The colour range when it is not the values' own (special tokens left out, a percentile clip).
    const range = doc?.meta?.colour_range ?? doc?.meta?.value_range ?? headers.get("X-Attnmap-Value-Range")?.split(",").map(Number);
    const bar = this.legend.querySelector(".legend-bar");
    bar.className = `legend-bar swatch cm-${colormap}`;
    this.legend.querySelector(".legend-min").textContent = range ? formatValue(range[0]) : "";
    this.legend.querySelector(".legend-max").textContent = range ? formatValue(range[1]) : "";
  }

  /** Clickable head thumbnails over the panels of a grid: a click shows that head alone. */
  showHeadPicks() {
    const doc = this.doc;
    const layout = doc?.meta?.view === "grid" ? this.currentLayout() : null;
    this.headPicks.hidden = layout === null;
    if (!layout) {
      this.headPicks.replaceChildren();
      return;
    }
    const width = this.img.naturalWidth;
    const height = this.img.naturalHeight;
    this.headPicks.replaceChildren(...layout.panels.map((box, head) => {
      const button = el("button", { type: "button", class: "head-pick", text: `head ${head}`, title: `Show head ${head} alone` });
      button.style.left = `${(box.x / width) * 100}%`;
      button.style.top = `${(box.y / height) * 100}%`;
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        this.handlers.onHead(head);
      });
      return button;
    }));
  }

  nextZoom(direction) {
    const index = ZOOMS.indexOf(this.zoom);
    return ZOOMS[Math.max(0, Math.min(ZOOMS.length - 1, index + direction))];
  }

  /** Zoom a long matrix or text: the picture grows inside a scrolling box, around its centre. */
  setZoom(zoom) {
    const box = this.scroller;
    const centreX = (box.scrollLeft + box.clientWidth / 2) / Math.max(1, box.scrollWidth);
    const centreY = (box.scrollTop + box.clientHeight / 2) / Math.max(1, box.scrollHeight);
    this.zoom = zoom;
    this.plot.style.setProperty("--zoom", String(zoom));
    this.root.classList.toggle("is-zoomed", zoom > 1);
    box.scrollLeft = centreX * box.scrollWidth - box.clientWidth / 2;
    box.scrollTop = centreY * box.scrollHeight - box.clientHeight / 2;
    this.root.querySelector(".zoom-fit").textContent = zoom > 1 ? `Fit (${zoom}×)` : "Fit";
  }

  currentLayout() {
    if (!this.layout) this.layout = layoutOf(this.doc, this.img.naturalWidth, this.img.naturalHeight, { annotated: this.annotated });
    return this.layout;
  }

  onPointer(event, isClick) {
    if (this.isText) {
      this.onTextPointer(event, isClick);
      return;
    }
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

  /** Text view: hover reads a token's value, a click makes it the query (again: every query). */
  onTextPointer(event, isClick) {
    const rect = this.img.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * this.img.naturalWidth;
    const y = ((event.clientY - rect.top) / rect.height) * this.img.naturalHeight;
    const index = tokenAt(this.doc.meta.boxes, x, y);
    if (index === null) {
      if (!this.pinned) this.clearCell();
      return;
    }
    this.showToken(index);
    if (isClick) this.handlers.onQuery(index === this.doc.meta.query ? null : index);
  }

  showToken(index) {
    const meta = this.doc.meta;
    this.token = index;
    const label = (meta.key_tokens ?? [])[index] ?? String(index);
    const what = typeof meta.query === "number" ? `“${(meta.key_tokens ?? [])[meta.query] ?? meta.query}” → “${label}”`
      : `attention received by “${label}”`;
    this.readout.replaceChildren(
      el("span", { class: "readout-where", text: `${what} (#${index})` }),
      el("strong", { class: "readout-value", text: formatValue(this.doc.values[index]) }),
    );
    const [x, y, w, h] = meta.boxes[index];
    const width = this.img.naturalWidth;
    const height = this.img.naturalHeight;
    this.cursor.style.left = `${(x / width) * 100}%`;
    this.cursor.style.top = `${(y / height) * 100}%`;
    this.cursor.style.width = `${(w / width) * 100}%`;
    this.cursor.style.height = `${(h / height) * 100}%`;
    this.cursor.hidden = false;
  }

  onKey(event) {
    if (this.isText) {
      const step = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1 }[event.key];
      if (event.key === "Enter" && this.token !== null) this.handlers.onQuery(this.token);
      if (!step) return;
      event.preventDefault();
      const count = this.doc.meta.boxes.length;
      this.showToken(this.token === null ? 0 : Math.max(0, Math.min(count - 1, this.token + step)));
      return;
    }
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
    this.token = null;
    if (!this.doc) message = "Values are not available for this map.";
    else if (this.isText) message = TEXT_READOUT;
    else if (this.annotated) message = "Turn off “Axes, labels and colorbar” to read values by pointing.";
    this.readout.textContent = message;
  }

  destroy() {
    if (this.url) URL.revokeObjectURL(this.url);
    this.root.remove();
  }
}
