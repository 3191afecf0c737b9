// Raw attention weights on the page: the shape of pasted JSON or an uploaded .npy/.safetensors
// file (only the header is read), and a small sample tensor to try the page with.

/** Shape of nested JSON lists of numbers; throws an Error with a readable message otherwise. */
export function jsonShape(value) {
  const shape = [];
  let level = value;
  while (Array.isArray(level)) {
    if (level.length === 0) throw new Error("an axis is empty");
    shape.push(level.length);
    level = level[0];
  }
  if (typeof level !== "number") throw new Error("the innermost values must be numbers");
  checkRank(shape);
  checkRegular(value, shape, 0);
  return shape;
}

function checkRegular(value, shape, depth) {
  if (depth === shape.length) {
    if (typeof value !== "number" || !Number.isFinite(value)) throw new Error("every value must be a finite number");
    return;
  }
  if (!Array.isArray(value) || value.length !== shape[depth]) {
    throw new Error(`the lists are ragged: axis ${depth} should have ${shape[depth]} entries everywhere`);
  }
  for (const item of value) checkRegular(item, shape, depth + 1);
}

function checkRank(shape) {
  if (shape.length < 2 || shape.length > 4) {
    throw new Error(`expected rank 2 [Q,K], 3 [H,Q,K] or 4 [L,H,Q,K]; got rank ${shape.length}`);
  }
}

/** Shape from the header of a .npy file (versions 1 to 3). */
export function npyShape(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) throw new Error("not a .npy file");
  const view = new DataView(buffer);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder("latin1").decode(bytes.subarray(start, start + headerLength));
  const match = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!match) throw new Error("the .npy header has no shape");
  const shape = match[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  checkRank(shape);
  return shape;
}

/** Shape of the single tensor in a .safetensors file (from its JSON header). */
export function safetensorsShape(buffer) {
  if (buffer.byteLength < 10) throw new Error("the .safetensors file is truncated");
  const length = Number(new DataView(buffer).getBigUint64(0, true));
  if (length > buffer.byteLength - 8 || length > 100_000_000) throw new Error("the .safetensors header is malformed");
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, length)));
  const names = Object.keys(header).filter((name) => name !== "__metadata__");
  if (names.length !== 1) throw new Error(`a .safetensors file must hold one tensor; this one holds ${names.length}`);
  const shape = header[names[0]].shape;
  checkRank(shape);
  return shape;
}

/** [L, H, Q, K] dimensions of a weights shape of rank 2, 3 or 4. */
export function dims(shape) {
  const [q, k] = shape.slice(-2);
  const heads = shape.length >= 3 ? shape[shape.length - 3] : 1;
  const layers = shape.length === 4 ? shape[0] : 1;
  return { layers, heads, queries: q, keys: k };
}

// A tiny deterministic generator so the sample is the same on every visit.
function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

export const SAMPLE_TOKENS = ["the", "cat", "sat", "on", "the", "mat", "."];

/**
 * A sample [3 layers, 4 heads, 7, 7] tensor with recognisable heads: previous token, first token,
 * self, and a broad one; later layers blur a little more. Rows are softmax-normalised.
 */
export function sampleWeights() {
  const random = generator(7);
  const n = SAMPLE_TOKENS.length;
  const patterns = [
    (q, k) => (k === q - 1 || (q === 0 && k === 0) ? 4 : 0),
    (q, k) => (k === 0 ? 3.5 : 0),
    (q, k) => (k === q ? 3.5 : 0),
    (q, k) => (k <= q ? 1.2 - 0.15 * (q - k) : -1),
  ];
  const layers = [0, 1, 2].map((layer) => patterns.map((pattern) => {
    const rows = [];
    for (let q = 0; q < n; q += 1) {
      const logits = [];
      for (let k = 0; k < n; k += 1) logits.push(pattern(q, k) / (1 + 0.6 * layer) + random() * 0.8);
      const peak = Math.max(...logits);
      const exps = logits.map((v) => Math.exp(v - peak));
      const total = exps.reduce((a, b) => a + b, 0);
      rows.push(exps.map((v) => Math.round((v / total) * 1000) / 1000));
    }
    return rows;
  }));
  return layers;
}
