// The customer-service app's knowledge bases (/v1/apps/support/kbs): the caller's own list,
// creating and deleting one, uploading an FAQ file (JSONL, CSV or TSV: the server checks it
// and names a bad row's line), the entries, and a query tried against the hybrid search with
// both retrievers' evidence per hit, and the embedding model the knowledge base searches with
// (the desk's default, or a served one of its own: PUT .../encoder).

import { call } from "./api.js";
import { bar, field, form, h, page, plural } from "./ui.js";

const BASE = "/v1/apps/support/kbs";
const FORMATS = { jsonl: "jsonl", csv: "csv", tsv: "tsv" };
const path = (name, rest = "") => `${BASE}/${encodeURIComponent(name)}${rest}`;

function hitView(hit, i) {
  return h(
    "div",
    { class: "hit", "data-id": String(hit.id) },
    bar(hit.question, hit.similarity, { top: i === 0, title: `entry ${hit.id}` }),
    h("p", { class: "answer" }, hit.answer),
    h(
      "p",
      { class: "muted evidence" },
      `fused score ${hit.score.toFixed(4)} · cosine ${hit.similarity.toFixed(3)} · ` +
        `BM25 ${hit.bm25.toFixed(2)} · nearest text: ${hit.matched}` +
        (hit.tags.length ? ` · tags: ${hit.tags.join(", ")}` : ""),
    ),
  );
}

/** A knowledge base's encoder: a <select> of the served models that embed, "default" first. */
async function encoderForm(name, current, refreshList) {
  const { models } = await call("GET", "/v1/models");
  const usable = models.filter((m) => m.capabilities.includes("embed"));
  const choice = h(
    "select",
    { id: "kb-encoder" },
    h("option", { value: "" }, "the desk's default"),
    usable.map((m) => h("option", { value: m.name }, `${m.name} (${m.task}, ${m.language})`)),
  );
  choice.value = current || "";
  const note = h("p", { class: "muted", id: "kb-encoder-note" });
  const show = (encoder) =>
    (note.textContent = encoder ? `searches with ${encoder}` : "searches with the desk's default encoder");
  let now = current;
  show(now);
  const use = async () => {
    note.textContent = "re-embedding the entries…";
    try {
      now = (await call("PUT", path(name, "/encoder"), { encoder: choice.value || null })).encoder;
    } finally {
      show(now); // a refusal (the server's message is in the alert region) changes nothing
    }
    await refreshList();
  };
  return [
    h("h3", {}, "Encoder"),
    h(
      "p",
      { class: "muted" },
      "The embedding model this knowledge base's entries and questions are embedded with, e.g. " +
        "one fine-tuned on its own wordings (llmos support kb pairs, then llmos finetune).",
    ),
    form("Use", use, field("model", choice)),
    note,
  ];
}

/** The panel of one knowledge base: upload, try a query, entries, its encoder. */
async function kbPanel(name, refreshList) {
  const entries = h("tbody", { id: "kb-entries" });
  const summary = h("p", { class: "muted", id: "kb-summary" });
  const refresh = async () => {
    const list = await call("GET", path(name, "/entries?limit=100"));
    summary.textContent =
      `${plural(list.total, "entry", "entries")}, revision ${list.revision}` +
      (list.total > list.entries.length ? ` (the first ${list.entries.length} shown)` : "");
    entries.replaceChildren(
      ...list.entries.map((e) =>
        h(
          "tr",
          { "data-id": String(e.id) },
          h("td", {}, String(e.id)),
          h("td", {}, e.question),
          h("td", {}, e.answer),
          h("td", {}, e.alternatives.join(" | ")),
          h("td", {}, e.tags.join(", ")),
          h(
            "td",
            {},
            h("button", {
              type: "button",
              class: "small",
              onclick: async () => {
                await call("DELETE", path(name, `/entries/${e.id}`));
                await refresh();
                await refreshList();
              },
            }, "Delete"),
          ),
        ),
      ),
    );
  };
  await refresh();

  const file = h("input", { id: "kb-file", type: "file", accept: ".jsonl,.csv,.tsv" });
  const upload = async () => {
    const chosen = file.files[0];
    if (!chosen) throw new Error("choose an FAQ file (.jsonl, .csv or .tsv) first");
    const format = FORMATS[chosen.name.split(".").pop().toLowerCase()];
    if (!format) throw new Error(`${chosen.name}: an FAQ file must end in .jsonl, .csv or .tsv`);
    const content = await chosen.text();
    const { ids } = await call("POST", path(name, "/files"), { format, content });
    summary.textContent = `added ${plural(ids.length, "entry", "entries")}`;
    await refresh();
    await refreshList();
  };

  const query = h("input", { id: "kb-query", size: 40, placeholder: "e.g. 这个东西我不想要了，能退吗" });
  const k = h("input", { id: "kb-k", type: "number", min: 1, max: 50, value: 3 });
  const hits = h("div", { id: "kb-hits" });
  const search = async () => {
    hits.replaceChildren();
    const answer = await call("POST", path(name, "/search"), { query: query.value, k: Number(k.value) });
    hits.replaceChildren(
      answer.hits.length ? "" : h("p", { class: "muted" }, "no entries"),
      ...answer.hits.map(hitView),
    );
  };

  const { encoder } = await call("GET", path(name));
  return h(
    "div",
    { id: "kb-panel", "data-kb": name },
    h("h2", {}, `Knowledge base “${name}”`),
    summary,
    h("h3", {}, "Try a question"),
    form("Ask", search, field("question", query, "wide"), field("k", k)),
    hits,
    h("h3", {}, "Upload FAQ pairs"),
    h(
      "p",
      { class: "muted" },
      "JSONL, CSV or TSV with question and answer (and optionally alternatives and tags, " +
        "several separated by |). A bad row stops the upload with its line; nothing is stored.",
    ),
    form("Upload", upload, field("file", file)),
    h("h3", {}, "Entries"),
    h(
      "table",
      { id: "kb-entry-table" },
      h(
        "thead",
        {},
        h("tr", {}, ["id", "question", "answer", "alternatives", "tags", ""].map((x) => h("th", {}, x))),
      ),
      entries,
    ),
    ...(await encoderForm(name, encoder, refreshList)),
  );
}

export async function support() {
  const list = h("tbody", { id: "kbs" });
  const panel = h("div", { id: "kb-detail" });
  const open = async (name) => panel.replaceChildren(await kbPanel(name, refreshList));
  async function refreshList() {
    const { kbs } = await call("GET", BASE);
    list.replaceChildren(
      ...kbs.map((kb) =>
        h(
          "tr",
          { "data-kb": kb.name },
          h("td", {}, h("a", { href: "#/support", onclick: (e) => (e.preventDefault(), open(kb.name)) }, kb.name)),
          h("td", {}, String(kb.entries)),
          h("td", {}, String(kb.revision)),
          h("td", {}, kb.encoder || "default"),
          h(
            "td",
            {},
            h("button", {
              type: "button",
              class: "small",
              onclick: async () => {
                await call("DELETE", path(kb.name));
                panel.replaceChildren();
                await refreshList();
              },
            }, "Delete"),
          ),
        ),
      ),
    );
    return kbs;
  }
  const kbs = await refreshList();

  const name = h("input", { id: "kb-name", placeholder: "e.g. shop-faq" });
  const create = async () => {
    await call("POST", BASE, { name: name.value });
    await refreshList();
    await open(name.value);
    name.value = "";
  };
  if (kbs.length) await open(kbs[0].name);

  return page(
    "Knowledge bases",
    "Your FAQ knowledge bases for the customer-service app: a message is answered from the " +
      "entries that match it best, by words (BM25) and by meaning (embeddings), fused.",
    h(
      "table",
      { id: "kb-table" },
      h("thead", {}, h("tr", {}, ["name", "entries", "revision", "encoder", ""].map((x) => h("th", {}, x)))),
      list,
    ),
    form("Create", create, field("name", name)),
    panel,
  );
}
