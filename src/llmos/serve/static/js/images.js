// "Images", a CLIP model's page: drop or pick an image to see it with its nearest emoji names
// in Chinese and English (POST /v1/images/describe) and, given labels, its zero-shot label
// (POST /v1/classify with images); and emoji images found by a text in either language
// (POST /v1/images/search), shown as thumbnails. The file goes to the server as a data: URL.

import { call } from "./api.js";
import { bar, busy, field, form, h, lines, modelPicker, page, percent } from "./ui.js";
import { ranked } from "./pages.js";

const LANGS = [
  ["zh", "中文"],
  ["en", "English"],
];
const STYLES = ["", "apple", "google", "twitter", "facebook"];
const BY = [
  ["captions", "the names (image-text cosine)"],
  ["drawings", "look-alike drawings the model trained on"],
  ["both", "both, added"],
];
const ZOOMS = [0.9, 1, 1.1]; // the mean of three scaled views: docs/BENCHMARKS.md

const dataUrl = (file) =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });

/** "cat: 猫, a cat" per line -> {cat: ["猫", "a cat"]} (a full-width colon works too). */
export function parseLabels(text) {
  const labels = {};
  for (const line of lines(text)) {
    const at = line.search(/[:：]/);
    const name = (at < 0 ? line : line.slice(0, at)).trim();
    const descriptions = at < 0 ? [] : line.slice(at + 1).split(/[,，]/);
    labels[name] = descriptions.map((d) => d.trim()).filter(Boolean);
    if (!labels[name].length) labels[name] = [name]; // a bare label describes itself
  }
  return labels;
}

function names(hits, lang, title) {
  return h(
    "div",
    { class: "image-names", id: `describe-${lang}` },
    h("h3", {}, title),
    hits.map((d, i) => bar(`${d.emoji} ${d.text}`, d.score, { top: i === 0, title: `U+${d.unified}` })),
  );
}

function describer(picker) {
  const input = h("input", { id: "image-file", type: "file", accept: "image/*" });
  const drop = h(
    "div",
    { class: "image-drop", id: "image-drop" },
    h("p", { class: "muted" }, "Drop an image here, or pick a file: "),
    input,
  );
  const k = h("input", { id: "describe-k", type: "number", min: 1, max: 50, value: 5 });
  const by = h(
    "select",
    { id: "describe-by" },
    BY.map(([value, title]) => h("option", { value }, title)),
  );
  const zooms = h("input", { id: "describe-zooms", type: "checkbox" });
  const labels = h("textarea", {
    id: "image-labels",
    placeholder: "Optional zero-shot labels, one per line: label: description, description\ne.g. 猫: 猫, a cat",
  });
  const out = h("div", { id: "image-results" });
  let file = null;

  const run = async () => {
    if (!file) throw new Error("Pick or drop an image first.");
    out.replaceChildren();
    const url = await dataUrl(file);
    const model = picker.value;
    const body = { model, images: [url], k: Number(k.value), by: by.value };
    if (zooms.checked) body.zooms = ZOOMS;
    const { results } = await call("POST", "/v1/images/describe", body);
    const chosen = parseLabels(labels.value);
    let zeroShot = null;
    if (Object.keys(chosen).length) {
      const answer = await call("POST", "/v1/classify", { model, images: [url], labels: chosen });
      zeroShot = answer.results[0];
    }
    out.replaceChildren(
      h(
        "div",
        { class: "result image-result" },
        h("img", { id: "image-preview", src: url, alt: file.name }),
        h(
          "div",
          { class: "image-described" },
          LANGS.map(([lang, title]) => names(results[0][lang], lang, title)),
        ),
      ),
      zeroShot &&
        h(
          "div",
          { class: "result", id: "image-label" },
          h("h3", {}, `Zero-shot: ${zeroShot.label}`),
          ranked(zeroShot.scores),
        ),
    );
  };
  const describe = form(
    "Describe",
    run,
    field("model", picker),
    drop,
    field("names per language", k),
    field("rank the names by", by),
    field(`three views (zoom ${ZOOMS.join(", ")})`, zooms),
    field("labels (optional)", labels, "wide"),
  );
  const button = describe.querySelector("button[type=submit]");
  const take = (chosen) => {
    if (!chosen) return;
    file = chosen;
    busy(button, run);
  };
  input.addEventListener("change", () => take(input.files[0]));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    take(e.dataTransfer.files[0]);
  });
  return [describe, out];
}

function searcher(picker) {
  const query = h("input", { id: "image-query", size: 40, placeholder: "e.g. 猫 or a red heart" });
  const style = h(
    "select",
    { id: "image-style" },
    STYLES.map((s) => h("option", { value: s }, s || "the model's held-out style")),
  );
  const k = h("input", { id: "image-k", type: "number", min: 1, max: 50, value: 8 });
  const out = h("div", { id: "image-hits", class: "thumbs" });
  const run = async () => {
    out.replaceChildren();
    const body = { model: picker.value, query: query.value, k: Number(k.value) };
    if (style.value) body.style = style.value;
    const { hits, style: shown } = await call("POST", "/v1/images/search", body);
    out.replaceChildren(
      ...hits.map((hit, i) =>
        h(
          "figure",
          { class: i === 0 ? "thumb top" : "thumb", "data-unified": hit.unified, "data-score": String(hit.score) },
          h("img", { src: hit.image, alt: hit.name || hit.emoji, title: `U+${hit.unified} (${shown})` }),
          h(
            "figcaption",
            {},
            h("span", { class: "thumb-name" }, hit.zh_name ? `${hit.zh_name} · ${hit.name}` : hit.name),
            h("span", { class: "value" }, percent(hit.score)),
          ),
        ),
      ),
    );
  };
  return [form("Search", run, field("model", picker), field("text", query), field("style", style), field("k", k)), out];
}

export function images({ catalog }) {
  const describeModel = modelPicker(catalog.models, "images/describe", "image-model");
  const searchModel = modelPicker(catalog.models, "images/search", "image-search-model");
  if (!describeModel || !searchModel) {
    return page(
      "Images",
      null,
      h("p", { class: "panel" }, "No CLIP model (task clip) on this server: train one with configs/pretrain/clip-emoji.yaml."),
    );
  }
  return page(
    "Images",
    "A CLIP model reads an image and texts into one space: an image's nearest emoji names in Chinese and English " +
      "(cosine similarity), its zero-shot label from your descriptions, and the emoji images nearest a text.",
    h("h2", {}, "Describe an image"),
    describer(describeModel),
    h("h2", {}, "Search images by text"),
    searcher(searchModel),
  );
}
