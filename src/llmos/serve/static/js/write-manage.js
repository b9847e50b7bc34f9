// The Write page's panels of what the caller keeps (/v1/apps/write): their documents (listed,
// uploaded from a text box or a file, used as the editor's text, deleted), their dictionary
// (protected terms and pairs, added and removed) and their adapters (listed with status; one
// trained as a background job shows the Jobs page's progress bar until it finishes; deleted).

import { call } from "./api.js";
import { FINISHED, jobRow } from "./jobs.js";
import { busy, field, form, h, plural, showError } from "./ui.js";

const BASE = "/v1/apps/write";
const POLL_MS = 500;

const when = (iso) => iso.slice(0, 16).replace("T", " ");

/** A small secondary button whose (async) action runs under busy(). */
export function small(label, onclick, attrs = {}) {
  const button = h("button", { type: "button", class: "small secondary", ...attrs }, label);
  button.addEventListener("click", () => busy(button, onclick));
  return button;
}

// --- documents -------------------------------------------------------------------------------

/** The documents panel; `ed.set(text)` puts a document in the editor. */
export async function documents(ed) {
  const rows = h("tbody", { id: "write-docs" });
  const refresh = async () => {
    const docs = await call("GET", `${BASE}/documents`);
    rows.replaceChildren(
      ...(docs.length
        ? docs.map((d) =>
            h(
              "tr",
              { "data-id": String(d.id) },
              h("td", {}, d.title),
              h("td", { class: "num" }, String(d.chars)),
              h("td", {}, when(d.updated_at)),
              h(
                "td",
                {},
                small(
                  "Use as editor text",
                  async () => ed.set((await call("GET", `${BASE}/documents/${d.id}`)).text),
                  { "data-action": "use" },
                ),
                " ",
                small(
                  "Delete",
                  async () => {
                    await call("DELETE", `${BASE}/documents/${d.id}`);
                    await refresh();
                  },
                  { "data-action": "delete" },
                ),
              ),
            ),
          )
        : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No documents yet."))]),
    );
  };
  await refresh();

  const title = h("input", { id: "write-doc-title", size: 30, placeholder: "e.g. 第一回" });
  const content = h("textarea", { id: "write-doc-text", rows: 4, placeholder: "the document's text" });
  const file = h("input", { id: "write-doc-file", type: "file", accept: ".txt,.md,text/plain" });
  const upload = async () => {
    const chosen = file.files[0];
    const text = chosen ? await chosen.text() : content.value;
    const name = title.value.trim() || (chosen ? chosen.name.replace(/\.[^.]*$/, "") : "");
    if (!name) throw new Error("Give the document a title.");
    if (!text.trim()) throw new Error("Paste the document's text or choose a text file.");
    await call("POST", `${BASE}/documents`, { title: name, text });
    title.value = content.value = file.value = "";
    await refresh();
  };
  const fromEditor = small("Copy the editor's text", () => (content.value = ed.text.value));
  return h(
    "div",
    {},
    h("h2", {}, "Documents"),
    h(
      "p",
      { class: "muted" },
      "Your own writing: searched for material (for you only) and what your adapters learn your style from.",
    ),
    h(
      "table",
      { id: "write-doc-table" },
      h("thead", {}, h("tr", {}, ["title", "characters", "updated", ""].map((x) => h("th", {}, x)))),
      rows,
    ),
    form(
      "Upload",
      upload,
      field("title (a file's name if empty)", title),
      field("text", content, "wide"),
      h("div", {}, fromEditor),
      field("or a text file (UTF-8)", file),
    ),
  );
}

// --- dictionary ------------------------------------------------------------------------------

export async function dictionary() {
  const protect = h("ul", { id: "write-protect", class: "write-terms" });
  const pairs = h("ul", { id: "write-pairs", class: "write-terms" });
  const summary = h("p", { class: "muted", id: "write-dict-summary" });
  const remove = (term) => async () => {
    await call("DELETE", `${BASE}/dictionary/${encodeURIComponent(term)}`);
    show(await call("GET", `${BASE}/dictionary`));
  };
  const entry = (term, ...shown) =>
    h("li", { "data-term": term }, ...shown, " ", small("Remove", remove(term), { "data-action": "remove" }));
  function show(dict) {
    summary.textContent = `${plural(dict.size, "entry", "entries")}`;
    protect.replaceChildren(
      ...(dict.protect.length
        ? dict.protect.map((t) => entry(t, h("span", { class: "term" }, t)))
        : [h("li", { class: "muted" }, "none")]),
    );
    const wrong = Object.keys(dict.pairs);
    pairs.replaceChildren(
      ...(wrong.length
        ? wrong.map((w) =>
            entry(w, h("span", { class: "term" }, w), " → ", h("span", { class: "term" }, dict.pairs[w])),
          )
        : [h("li", { class: "muted" }, "none")]),
    );
  }
  show(await call("GET", `${BASE}/dictionary`));

  const term = h("input", { id: "write-protect-term", placeholder: "e.g. 诸葛亮" });
  const wrongForm = h("input", { id: "write-pair-wrong", placeholder: "wrong, e.g. 在坐" });
  const rightForm = h("input", { id: "write-pair-right", placeholder: "right, e.g. 在座" });
  const addTerm = async () => {
    show(await call("POST", `${BASE}/dictionary`, { protect: [term.value.trim()] }));
    term.value = "";
  };
  const addPair = async () => {
    const pairs = { [wrongForm.value.trim()]: rightForm.value.trim() };
    show(await call("POST", `${BASE}/dictionary`, { pairs }));
    wrongForm.value = rightForm.value = "";
  };
  return h(
    "div",
    {},
    h("h2", {}, "Dictionary"),
    h(
      "p",
      { class: "muted" },
      "Terms never corrected (names, jargon), and pairs of a wrong form and the right one, " +
        "replaced wherever found.",
    ),
    summary,
    h(
      "div",
      { class: "write-dict" },
      h("div", {}, h("h3", {}, "Protected terms"), protect, form("Protect", addTerm, field("term", term))),
      h(
        "div",
        {},
        h("h3", {}, "Pairs"),
        pairs,
        form("Add pair", addPair, field("wrong form", wrongForm), field("right form", rightForm)),
      ),
    ),
  );
}

// --- adapters --------------------------------------------------------------------------------

function adapterDetails(a) {
  const info = a.info || {};
  if (a.status === "failed") return info.error || "failed";
  if (a.status !== "ready") return info.steps ? `${plural(info.steps, "step")}…` : "";
  const parts = [];
  if (info.step !== undefined) parts.push(plural(info.step, "step"));
  if (info.documents !== undefined) parts.push(plural(info.documents, "document"));
  if (info.perplexity !== undefined) parts.push(`perplexity ${Number(info.perplexity).toFixed(1)}`);
  if (info.base_perplexity !== undefined) parts.push(`base ${Number(info.base_perplexity).toFixed(1)}`);
  return parts.join(" · ");
}

/** The adapters panel; `onList(adapters)` is called with every listing. */
export async function adapters(onList) {
  const rows = h("tbody", { id: "write-adapters" });
  const training = h("div", { id: "write-training" });
  const watched = new Set();
  const refresh = async () => {
    const list = await call("GET", `${BASE}/adapters`);
    onList(list);
    rows.replaceChildren(
      ...(list.length
        ? list.map((a) =>
            h(
              "tr",
              { "data-name": a.name, "data-status": a.status },
              h("td", {}, a.name),
              h("td", { class: "status" }, a.status),
              h("td", {}, a.base),
              h("td", { class: "muted" }, adapterDetails(a)),
              h("td", {}, when(a.created_at)),
              h(
                "td",
                {},
                small(
                  "Delete",
                  async () => {
                    await call("DELETE", `${BASE}/adapters/${encodeURIComponent(a.name)}`);
                    await refresh();
                  },
                  { "data-action": "delete" },
                ),
              ),
            ),
          )
        : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No adapters yet."))]),
    );
    for (const a of list) if (a.status === "training" && a.job) watch(a.job);
  };

  /** Show the job's progress bar (the Jobs page's) until it finishes, then the list again. */
  function watch(id) {
    if (watched.has(id)) return;
    watched.add(id);
    const box = h("div", { "data-job": id });
    training.prepend(box);
    const show = async () => {
      const job = await call("GET", `/v1/jobs/${id}`);
      box.replaceChildren(jobRow(job, show)); // its Cancel shows the job again
      return job;
    };
    const poll = async () => {
      if (!document.body.contains(training)) return; // the page was left
      const job = await show();
      if (FINISHED.includes(job.status)) return refresh();
      setTimeout(() => poll().catch(showError), POLL_MS);
    };
    return poll();
  }

  const name = h("input", { id: "write-adapter-name", placeholder: "letters, digits, - and _" });
  const steps = h("input", { id: "write-adapter-steps", type: "number", min: 1, max: 5000, value: 300 });
  const train = async () => {
    const body = { name: name.value.trim(), steps: Number(steps.value) };
    const made = await call("POST", `${BASE}/adapters`, body);
    name.value = "";
    await refresh();
    if (made.job) await watch(made.job);
  };
  await refresh();
  return h(
    "div",
    {},
    h("h2", {}, "Adapters"),
    h(
      "p",
      { class: "muted" },
      "A LoRA adapter of the served GPT trained on your documents, so that Continue writes in your style. " +
        "Training runs in the background (300 steps: a few minutes on a CPU).",
    ),
    h(
      "table",
      { id: "write-adapter-table" },
      h("thead", {}, h("tr", {}, ["name", "status", "base", "", "created", ""].map((x) => h("th", {}, x)))),
      rows,
    ),
    form("Train adapter", train, field("name", name), field("steps", steps)),
    training,
  );
}
