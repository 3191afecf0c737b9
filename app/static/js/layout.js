// Where each value of a `format=json` answer sits in the PNG of the same request, so that a
// pointer position (or a keyboard cursor) can be turned into a value and back into a box.
//
// The PNG views are laid out as follows (annotated figures have margins and are not mapped):
//   heatmap, 2-D   the whole picture is the matrix, rows top to bottom
//   heatmap, 1-D   one query row as a horizontal strip
//   overlay        the patch grid covers meta.preprocessing.placement, in original-image pixels
//   grid           one panel per head, near-square arrangement with 2 px gaps

const GRID_GAP = 2;

function gridArrangement(panels) {
  const columns = Math.ceil(Math.sqrt(panels));
  return { rows: Math.ceil(panels / columns), columns };
}

function overlayBox(meta, width, height) {
  const pre = meta.preprocessing;
  if (!pre || !Array.isArray(pre.placement)) return null;
  const original = pre.original_size ?? pre.image?.size ?? [width, height];
  const sx = width / original[0];
  const sy = height / original[1];
  const [x0, y0, x1, y1] = pre.placement;
  return { x: x0 * sx, y: y0 * sy, w: (x1 - x0) * sx, h: (y1 - y0) * sy };
}

/**
 * The layout of `doc` (a format=json answer) in a PNG of `width` x `height` pixels, or null when
 * the picture cannot be mapped. The result has panels (boxes in PNG pixels), rows, cols and a
 * value(panel, row, col) accessor.
 */
export function layoutOf(doc, width, height, { annotated = false } = {}) {
  if (!doc || annotated || !width || !height) return null;
  const { values, shape, meta } = doc;
  const whole = { x: 0, y: 0, w: width, h: height };
  if (meta.view === "grid" && shape.length === 3) {
    const { rows, columns } = gridArrangement(shape[0]);
    const w = (width - GRID_GAP * (columns - 1)) / columns;
    const h = (height - GRID_GAP * (rows - 1)) / rows;
    const panels = Array.from({ length: shape[0] }, (_, i) => ({
      x: (i % columns) * (w + GRID_GAP), y: Math.floor(i / columns) * (h + GRID_GAP), w, h,
    }));
    return { panels, rows: shape[1], cols: shape[2], value: (p, r, c) => values[p][r][c] };
  }
  if (meta.view === "overlay" && shape.length === 2) {
    const box = overlayBox(meta, width, height);
    if (!box) return null;
    return { panels: [box], rows: shape[0], cols: shape[1], value: (_p, r, c) => values[r][c] };
  }
  if (shape.length === 2) return { panels: [whole], rows: shape[0], cols: shape[1], value: (_p, r, c) => values[r][c] };
  if (shape.length === 1) return { panels: [whole], rows: 1, cols: shape[0], value: (_p, _r, c) => values[c] };
  return null;
}

/** The cell {panel, row, col} under PNG pixel (x, y), or null outside every panel. */
export function cellAt(layout, x, y) {
  for (let panel = 0; panel < layout.panels.length; panel += 1) {
    const box = layout.panels[panel];
    if (x < box.x || y < box.y || x >= box.x + box.w || y >= box.y + box.h) continue;
    const row = Math.min(layout.rows - 1, Math.floor(((y - box.y) / box.h) * layout.rows));
    const col = Math.min(layout.cols - 1, Math.floor(((x - box.x) / box.w) * layout.cols));
    return { panel, row, col };
  }
  return null;
}

/** The box of one cell in PNG pixels. */
export function cellBox(layout, cell) {
  const box = layout.panels[cell.panel];
  const w = box.w / layout.cols;
  const h = box.h / layout.rows;
  return { x: box.x + cell.col * w, y: box.y + cell.row * h, w, h };
}

/** Move a cell by (dr, dc), crossing into the next or previous panel at the row ends. */
export function moveCell(layout, cell, dr, dc) {
  let { panel, row, col } = cell;
  col += dc;
  row += dr;
  if (col < 0) {
    if (panel > 0) { panel -= 1; col = layout.cols - 1; } else col = 0;
  } else if (col >= layout.cols) {
    if (panel < layout.panels.length - 1) { panel += 1; col = 0; } else col = layout.cols - 1;
  }
  row = Math.max(0, Math.min(layout.rows - 1, row));
  return { panel, row, col };
}

function label(list, index, fallback) {
  const text = Array.isArray(list) ? list[index] : undefined;
  return text === undefined || text === null ? fallback : `“${text}”`;
}

/** A sentence describing one cell of `doc` (without the value). */
export function describeCell(doc, layout, cell) {
  const { meta, shape } = doc;
  const keys = meta.key_tokens ?? meta.tokens;
  const headPart = meta.view === "grid" ? `head ${cell.panel} · ` : "";
  if (meta.grid) return `${headPart}patch row ${cell.row}, column ${cell.col}`;
  if (shape.length === 1 || (meta.view === "grid" && layout.rows === 1)) {
    const query = typeof meta.query === "number" ? label(keys, meta.query, `query ${meta.query}`) : `query ${meta.query ?? "?"}`;
    return `${headPart}${query} → ${label(keys, cell.col, `key ${cell.col}`)}`;
  }
  const rows = meta.view === "grid" ? meta.key_tokens : meta.tokens;
  return `${headPart}${label(rows, cell.row, `query ${cell.row}`)} → ${label(keys, cell.col, `key ${cell.col}`)}`;
}
