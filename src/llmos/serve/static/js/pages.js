// One function per page: (ctx) -> the page's element. ctx.catalog is GET /v1/models' answer;
// ctx.reload() fetches it again. Every API failure lands in the alert region (ui.busy).

import { ApiError, call, events } from "./api.js";
import { bar, colour, field, form, h, lines, mb, modelPicker, page, percent, plural } from "./ui.js";

function noModel(title, capability) {
  return page(title, null, h("p", { class: "panel" }, `No model on this server answers /v1/${capability}.`));
}

// --- models ---------------------------------------------------------------------------------

function labelList(labels) {
  if (!labels) return "—";
  if (labels.length <= 8) return labels.join(", ");
  return h("details", {}, h("summary", {}, `${labels.length} labels`), labels.join(", "));
}

export async function models(ctx) {
  const { models, indexes, memory_used_bytes, memory_budget_bytes } = await ctx.reload();
  const rows = models.map((m) =>
    h(
      "tr",
      { "data-model": m.name },
      h("td", {}, h("strong", {}, m.name)),
      h("td", {}, m.task),
      h("td", {}, m.capabilities.join(", ")),
      h("td", {}, m.language),
      h("td", { class: "num" }, mb(m.size_bytes)),
      h("td", {}, m.quantization || "—"),
      h("td", { class: "labels" }, labelList(m.labels)),
      h("td", {}, m.loaded ? "yes" : "no"),
    ),
  );
  const head = ["name", "task", "routes", "language", "size MB", "quantization", "labels", "loaded"];
  return page(
    "Models",
    `${plural(models.length, "model")}, ${plural(indexes.length, "index", "indexes")}; ` +
      `${mb(memory_used_bytes)} of ${mb(memory_budget_bytes)} MB loaded. ` +
      "A model loads on its first request.",
    h(
      "table",
      { id: "models" },
      h(
        "tr",
        {},
        head.map((x) => h("th", {}, x)),
      ),
      rows,
    ),
    indexes.length > 0 && h("h2", {}, "Indexes"),
    indexes.length > 0 &&
      h(
        "table",
        { id: "indexes" },
        h(
          "tr",
          {},
          ["name", "embedding model", "documents", "dim"].map((x) => h("th", {}, x)),
        ),
        indexes.map((i) =>
          h(
            "tr",
            {},
            h("td", {}, i.name),
            h("td", {}, i.model),
            h("td", { class: "num" }, String(i.count)),
            h("td", { class: "num" }, String(i.dim)),
          ),
        ),
      ),
  );
}

// --- classify -------------------------------------------------------------------------------

export function ranked(scores, shown = 5) {
  const rows = Object.entries(scores)
    .sort((a, b) => b[1] - a[1])
    .map(([label, score], i) => bar(label, score, { top: i === 0 }));
  if (rows.length <= shown) return rows;
  return [
    ...rows.slice(0, shown),
    h("details", {}, h("summary", {}, `${rows.length - shown} more labels`), rows.slice(shown)),
  ];
}

export function classify({ catalog }) {
  // A CLIP model classifies images, from labels: the Images page.
  const picker = modelPicker(
    catalog.models.filter((m) => m.task !== "clip"),
    "classify",
  );
  if (!picker) return noModel("Classify", "classify");
  const texts = h("textarea", {
    id: "texts",
    placeholder: "One text per line, e.g. 这家酒店的服务很好，下次还会再来。",
  });
  const textsB = h("textarea", {
    id: "texts-b",
    placeholder: "Sentence-pair models: the second text of each text above, one per line, in the same order",
  });
  const out = h("div", { id: "results" });
  const run = async () => {
    out.replaceChildren();
    const list = lines(texts.value);
    const body = { model: picker.value, texts: list };
    const seconds = lines(textsB.value);
    if (seconds.length) body.texts_b = seconds; // the server checks that there is one per text
    const { results } = await call("POST", "/v1/classify", body);
    out.replaceChildren(
      ...results.map((r, i) =>
        h(
          "div",
          { class: "result" },
          h("p", { class: "text" }, list[i]),
          body.texts_b && h("p", { class: "text-b" }, body.texts_b[i]),
          ranked(r.scores),
        ),
      ),
    );
  };
  return page(
    "Classify",
    "Labels with their probabilities, best first. Sentence-pair models take a second text per text.",
    form(
      "Classify",
      run,
      field("model", picker),
      field("texts", texts, "wide"),
      field("second texts (sentence pairs; empty: single texts)", textsB, "wide"),
    ),
    out,
  );
}

// --- tag ------------------------------------------------------------------------------------

/** The span types of a tagger's labels: B-PER, I-PER -> PER; plain B/M/E/S/O tags name none. */
function spanTypes(labels) {
  const types = (labels || []).filter((l) => !/^[BIESMO]$/.test(l)).map((l) => l.replace(/^[BIESMU]-/, ""));
  return [...new Set(types)];
}

/** The text with each span wrapped in a coloured <mark>; offsets count code points. */
function highlighted(text, spans, colours) {
  const chars = Array.from(text);
  const parts = [];
  let at = 0;
  for (const s of [...spans].sort((a, b) => a.start - b.start)) {
    if (s.start < at) continue; // overlapping spans: keep the first
    parts.push(chars.slice(at, s.start).join(""));
    const title = s.score == null ? s.label : `${s.label} ${percent(s.score)}`;
    parts.push(
      h(
        "mark",
        { class: "span", "data-label": s.label, title, style: { "--c": colours(s.label) } },
        chars.slice(s.start, s.end).join(""),
      ),
    );
    at = s.end;
  }
  parts.push(chars.slice(at).join(""));
  return h("p", { class: "tagged" }, parts);
}

export function tag({ catalog }) {
  const picker = modelPicker(catalog.models, "tag");
  if (!picker) return noModel("Tag", "tag");
  const texts = h("textarea", { id: "texts", placeholder: "One text per line, e.g. 江泽民在北京会见记者。" });
  const out = h("div", { id: "results" });
  const run = async () => {
    out.replaceChildren();
    const list = lines(texts.value);
    const model = catalog.models.find((m) => m.name === picker.value);
    const { results } = await call("POST", "/v1/tag", { model: model.name, texts: list });
    const types = spanTypes(model.labels);
    for (const s of results.flat()) if (!types.includes(s.label)) types.push(s.label);
    const colours = (label) => colour(types.indexOf(label));
    const legend = h(
      "div",
      { class: "legend", id: "legend" },
      types.map((t) => h("span", { style: { "--c": colours(t) } }, t)),
    );
    out.replaceChildren(
      legend,
      ...results.map((spans, i) =>
        h(
          "div",
          { class: "result" },
          highlighted(list[i], spans, colours),
          spans.length === 0 && h("p", { class: "muted" }, "no spans"),
        ),
      ),
    );
  };
  return page(
    "Tag",
    "Labelled spans (entities, slots, words) highlighted in the text, a colour per type.",
    form("Tag", run, field("model", picker), field("texts", texts, "wide")),
    out,
  );
}

// --- fill-mask ------------------------------------------------------------------------------

export function fillMask({ catalog }) {
  const picker = modelPicker(catalog.models, "fill-mask");
  if (!picker) return noModel("Fill-mask", "fill-mask");
  const text = h("input", { id: "text", size: 48, value: "今天天气很[MASK]。" });
  const topK = h("input", { id: "top-k", type: "number", min: 1, value: 5 });
  const out = h("div", { id: "results" });
  const run = async () => {
    out.replaceChildren();
    const body = { model: picker.value, text: text.value, top_k: Number(topK.value) };
    const { results } = await call("POST", "/v1/fill-mask", body);
    out.replaceChildren(
      ...results.map((fills, i) =>
        h(
          "div",
          { class: "result" },
          h("p", { class: "text" }, fills[0] ? fills[0].sequence : ""),
          h("p", { class: "muted" }, `[MASK] ${i + 1} of ${results.length}`),
          fills.map((f, j) => bar(f.token, f.score, { top: j === 0, title: f.sequence })),
        ),
      ),
    );
  };
  return page(
    "Fill-mask",
    "The likeliest tokens behind each [MASK].",
    form("Fill", run, field("model", picker), field("text with [MASK]", text), field("top k", topK)),
    out,
  );
}

// --- generate -------------------------------------------------------------------------------

export async function generate({ catalog }) {
  const picker = modelPicker(catalog.models, "generate");
  if (!picker) return noModel("Generate", "generate");
  // The form starts from the server's own decoding defaults (what a request that leaves an
  // option out gets), so that the console decodes as the API does.
  const defaults = await call("GET", "/v1/generate/defaults");
  const num = (id, value, step) => h("input", { id, type: "number", value, step });
  const prompt = h("textarea", { id: "prompt", placeholder: "e.g. 却说曹操" });
  const strategy = h("select", { id: "strategy" }, h("option", {}, "greedy"), h("option", {}, "sample"));
  strategy.value = defaults.strategy;
  const controls = {
    max_new_tokens: num("max-new-tokens", defaults.max_new_tokens, 1),
    strategy,
    temperature: num("temperature", defaults.temperature, "any"),
    top_k: num("top-k", defaults.top_k, 1),
    top_p: num("top-p", defaults.top_p, "any"),
    repetition_penalty: num("repetition-penalty", defaults.repetition_penalty, "any"),
    no_repeat_ngram_size: num("no-repeat-ngram-size", defaults.no_repeat_ngram_size, 1),
    num_beams: h("input", { id: "num-beams", type: "number", min: 1, value: defaults.num_beams, step: 1 }),
    seed: h("input", { id: "seed", type: "number", placeholder: "none" }),
  };
  const stop = h("input", { id: "stop", placeholder: "e.g. 。|\\n (separated by |)" });
  const raw = h("input", { id: "raw", type: "checkbox" });
  const sampling = [controls.temperature, controls.top_k, controls.top_p, controls.seed];
  const sync = () => {
    const greedy = controls.strategy.value === "greedy";
    sampling.forEach((x) => (x.disabled = greedy));
    controls.num_beams.disabled = !greedy; // beam search is greedy only
  };
  controls.strategy.addEventListener("change", sync);
  sync();
  const output = h("div", { class: "output", id: "output" });
  const status = h("p", { class: "muted", id: "status" });
  let controller = null;
  const cancel = h(
    "button",
    { type: "button", class: "secondary", disabled: true, onclick: () => controller?.abort() },
    "Stop",
  );

  const run = async () => {
    const body = { model: picker.value, prompt: prompt.value, raw: raw.checked };
    body.max_new_tokens = Number(controls.max_new_tokens.value);
    body.strategy = controls.strategy.value;
    body.repetition_penalty = Number(controls.repetition_penalty.value);
    body.no_repeat_ngram_size = Number(controls.no_repeat_ngram_size.value);
    if (body.strategy === "sample") {
      for (const name of ["temperature", "top_k", "top_p"]) body[name] = Number(controls[name].value);
      if (controls.seed.value !== "") body.seed = Number(controls.seed.value);
    } else if (controls.num_beams.value !== "1") {
      body.num_beams = Number(controls.num_beams.value); // the server checks the range
    }
    // A stream decodes one sequence (the server refuses num_beams > 1 with stream), so beam
    // search is one JSON answer, shown whole.
    body.stream = body.num_beams === undefined;
    body.stop = stop.value
      .split("|")
      .filter(Boolean)
      .map((s) => s.replaceAll("\\n", "\n"));
    const model = catalog.models.find((m) => m.name === picker.value);
    const text = h("span", { id: "generated" });
    output.replaceChildren(
      model.task === "generation" ? h("span", { class: "prompt" }, prompt.value) : "",
      text,
    );
    status.textContent = "generating…";
    controller = new AbortController();
    cancel.disabled = false;
    const started = performance.now();
    try {
      const signal = controller.signal;
      if (body.stream) {
        let done = false;
        for await (const { event, data } of events("/v1/generate", body, { signal })) {
          if (event === "error") throw new ApiError(0, data.type, data.message);
          if ((done = event === "done")) break;
          text.textContent += data.text;
        }
        if (!done) throw new ApiError(0, "network", "The stream ended before the answer was complete.");
      } else {
        text.textContent = (await call("POST", "/v1/generate", body, { signal })).text;
      }
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      const how = body.stream ? "" : `, beam search over ${plural(body.num_beams, "beam")}`;
      status.textContent = `done: ${Array.from(text.textContent).length} characters in ${seconds} s${how}`;
    } catch (e) {
      status.textContent = e.name === "AbortError" ? "stopped" : "failed";
      throw e;
    } finally {
      cancel.disabled = true;
      controller = null;
    }
  };
  return page(
    "Generate",
    "The text streams in as it decodes (server-sent events). The options start at the server's " +
      "defaults; sampling options apply to strategy sample; num beams above 1 (greedy, at most " +
      "16) is beam search, shown whole when it ends.",
    form(
      "Generate",
      run,
      field("model", picker),
      field("prompt", prompt, "wide"),
      h(
        "div",
        {},
        Object.entries(controls).map(([name, input]) => field(name.replaceAll("_", " "), input)),
      ),
      field("stop strings", stop),
      field("raw prompt (instruct models: no template)", raw, "check"),
    ),
    h("div", {}, cancel),
    status,
    output,
  );
}

// --- embed and search -----------------------------------------------------------------------

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb || 1);
}

function searchForm(indexes) {
  const picker = h(
    "select",
    { id: "index" },
    indexes.map((i) => h("option", { value: i.name }, `${i.name} (${i.count} documents, ${i.model})`)),
  );
  const query = h("input", { id: "query", size: 40, placeholder: "e.g. 学生学习历史" });
  const k = h("input", { id: "k", type: "number", min: 1, value: 5 });
  const out = h("div", { id: "hits" });
  const run = async () => {
    out.replaceChildren();
    const { hits } = await call("POST", "/v1/search", {
      index: picker.value,
      query: query.value,
      k: Number(k.value),
    });
    out.replaceChildren(
      hits.length === 0 ? h("p", { class: "muted" }, "no hits") : "",
      ...hits.map((hit, i) =>
        h(
          "div",
          { class: "hit", "data-id": hit.id },
          bar(hit.text, hit.score, { top: i === 0, title: `id ${hit.id}` }),
        ),
      ),
    );
  };
  return [form("Search", run, field("index", picker), field("query", query), field("k", k)), out];
}

function embedForm(picker) {
  const texts = h("textarea", { id: "embed-texts", placeholder: "A few texts, one per line" });
  const out = h("div", { id: "embeddings" });
  const run = async () => {
    out.replaceChildren();
    const list = lines(texts.value);
    const { dim, embeddings } = await call("POST", "/v1/embed", { model: picker.value, texts: list });
    const head = (x) => h("th", {}, x);
    const shade = (v) => ({ background: `hsl(218 80% ${Math.round(97 - 35 * Math.max(0, v))}%)` });
    out.replaceChildren(
      h("p", { id: "dim" }, `${embeddings.length} vectors of dimension ${dim}`),
      h(
        "table",
        { id: "vectors" },
        h("tr", {}, head("text"), head("first values")),
        embeddings.map((v, i) =>
          h(
            "tr",
            {},
            h("td", {}, list[i]),
            h(
              "td",
              { class: "vector" },
              `[${v
                .slice(0, 6)
                .map((x) => x.toFixed(4))
                .join(", ")}, …]`,
            ),
          ),
        ),
      ),
      embeddings.length > 1 && h("h2", {}, "Cosine similarity"),
      embeddings.length > 1 &&
        h(
          "table",
          { class: "matrix", id: "matrix" },
          h(
            "tr",
            {},
            head(""),
            list.map((_, j) => head(`#${j + 1}`)),
          ),
          embeddings.map((a, i) =>
            h(
              "tr",
              {},
              h("th", {}, `#${i + 1} ${list[i]}`),
              embeddings.map((b) => {
                const c = cosine(a, b);
                return h("td", { style: shade(c) }, c.toFixed(3));
              }),
            ),
          ),
        ),
    );
  };
  return [form("Embed", run, field("model", picker), field("texts", texts, "wide")), out];
}

export function search({ catalog }) {
  const picker = modelPicker(catalog.models, "embed", "embed-model");
  return page(
    "Embed & search",
    "Nearest documents of a vector index (cosine similarity), and sentence embeddings compared.",
    h("h2", {}, "Search an index"),
    catalog.indexes.length
      ? searchForm(catalog.indexes)
      : h("p", { class: "panel" }, "No index on this server (llmos index build)."),
    h("h2", {}, "Embed texts"),
    picker ? embedForm(picker) : h("p", { class: "panel" }, "No model on this server answers /v1/embed."),
  );
}
