// The one-click starts: built-in example images, sample sentences, and the quick-start cards of
// the empty state. What each click does is handed in by the caller.

import { byId, el, show } from "./dom.js";

/** Thumbnails of the example images and chips of the sample sentences. */
export function renderExamples({ images, sentences }, { onImage, onSentence }) {
  const captions = distinctCaptions(images);
  byId("thumbs").replaceChildren(...images.map((example, index) => {
    const caption = captions[index];
    const button = el("button", {
      type: "button", class: "thumb", "aria-pressed": "false", dataset: { name: example.name },
      "aria-label": `Use example image ${caption}`,
    }, [el("img", { src: example.url, alt: "", loading: "lazy", width: 64, height: 64 }), el("span", { text: caption })]);
    button.addEventListener("click", () => onImage(example));
    return el("li", {}, [button]);
  }));
  show(byId("image-examples"), images.length > 0);
  byId("sentence-list").replaceChildren(...sentences.map((sentence) => {
    const button = el("button", { type: "button", class: "chip", text: sentence });
    button.addEventListener("click", () => onSentence(sentence));
    return el("li", {}, [button]);
  }));
  show(byId("samples"), sentences.length > 0);
}

/**
 * One caption per example image. Two pictures of the same shape get what tells them apart, taken
 * from the file name: "square scene", "square shortcut", "triangle 256px".
 */
export function distinctCaptions(images) {
  const base = images.map((example) => example.label ?? example.shape ?? example.name.replace(/\.[a-z]+$/i, ""));
  return images.map((example, i) => {
    if (base.filter((caption) => caption === base[i]).length === 1) return base[i];
    const rest = example.name.replace(/\.[a-z]+$/i, "").split(/[_-]+/)
      .filter((word) => word.toLowerCase() !== String(base[i]).toLowerCase()).join(" ");
    // Short enough for a thumbnail: "triangle 256px", "square scene", "square shortcut".
    const detail = /^\d+$/.test(rest) ? `${rest}px` : rest.split(" ")[0];
    return detail ? `${base[i]} ${detail}` : `${base[i]} ${i + 1}`;
  });
}

/** The example image the shortcut demo starts from: one marked in boxes.json, else the first. */
export function shortcutExample(images) {
  return images.find((example) => example.marker === true || Array.isArray(example.marker_box))
    ?? images.find((example) => /shortcut|marker/i.test(example.name)) ?? images[0] ?? null;
}

/**
 * Quick-start cards for what this server offers: [{label, detail, action}] with actions for
 * an example image, the shortcut demo, a sample sentence and sample weights.
 */
export function renderQuickStarts(cards) {
  byId("quick").replaceChildren(...cards.map(({ label, detail, action }) => {
    const button = el("button", { type: "button", class: "quick-card" }, [
      el("span", { class: "quick-label", text: label }), el("span", { class: "quick-detail", text: detail }),
    ]);
    button.addEventListener("click", action);
    return button;
  }));
}
