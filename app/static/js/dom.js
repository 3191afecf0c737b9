// Small DOM helpers. Text always goes in through textContent, never as HTML.

/** The element with this id (throws early when the page and the script disagree). */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`missing #${id}`);
  return element;
}

/** Create an element with attributes (class, text, dataset, plain attributes) and children. */
export function el(tag, attrs = {}, children = []) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) element.append(child);
  return element;
}

/** Replace a select's options with [{value, label, disabled}], keeping the old value if still offered. */
export function setOptions(select, options, preferred) {
  const previous = preferred ?? select.value;
  select.replaceChildren(...options.map((o) => el("option", { value: o.value, text: o.label, disabled: o.disabled })));
  const values = options.filter((o) => !o.disabled).map((o) => o.value);
  select.value = values.includes(previous) ? previous : (values[0] ?? "");
}

/** Show or hide an element (the hidden attribute, so CSS and assistive tech agree). */
export function show(element, visible = true) {
  element.hidden = !visible;
}

/** Call fn once calls stop arriving for `ms` milliseconds. */
export function debounce(fn, ms) {
  let timer = 0;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/** A number for people: 4 significant digits, exponent only for very small or large values. */
export function formatValue(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5)) return value.toExponential(2);
  return Number(value.toPrecision(4)).toString();
}
