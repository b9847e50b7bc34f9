// The writing assistant (/v1/apps/write), "Write": an editor whose spelling corrections are
// underlined in place, each with its suggestion and Accept / Reject; material from the shared
// corpus and the caller's documents beside it, each with its source and Insert; a continuation
// streamed from the served GPT with one of the caller's adapters (or the base model); and the
// caller's documents, dictionary and adapters (write-manage.js). Every route is the caller's
// own.

import { ApiError, call, events } from "./api.js";
import { bar, busy, field, h, page, plural } from "./ui.js";
import { adapters, dictionary, documents, small } from "./write-manage.js";

const BASE = "/v1/apps/write";
const CORPORA = {
  sanguo: "三国演义",
  peoples_daily: "People's Daily",
  tang: "Tang poems",
  songci: "Song ci",
  song: "Song poems",
  user: "your document",
};

// The server's offsets count characters (code points); a JS string indexes UTF-16 units.
const chars = (text) => Array.from(text);

/** `edit` applied to `text`: the characters [start, end) replaced by the suggestion. */
function applyEdit(text, edit) {
  const c = chars(text);
  return c.slice(0, edit.start).join("") + edit.suggestion + c.slice(edit.end).join("");
}

// --- the editor and its corrections -----------------------------------------------------------

/**
 * The editor: a textarea, and under it the text with the pending corrections underlined, each
 * followed by its suggestion and Accept / Reject. The corrections hold offsets into the
 * editor's text as it is now: an accepted one shifts those after it by its change in length;
 * any other change of the text drops them (check again).
 */
function editor() {
  const text = h("textarea", {
    id: "write-text",
    rows: 10,
    placeholder: "Write or paste your text here, e.g. 我们再学校里学习历史。",
  });
  const threshold = h("input", {
    id: "write-threshold",
    type: "number",
    min: 0,
    max: 1,
    step: 0.05,
    placeholder: "model's",
  });
  const marked = h("div", { id: "write-marked", class: "output write-marked", hidden: true });
  const note = h("p", { class: "muted", id: "write-check-note" });
  const acceptAll = h("button", { type: "button", id: "write-accept-all", hidden: true }, "Accept all");
  const rejectAll = h(
    "button",
    { type: "button", class: "secondary", id: "write-reject-all", hidden: true },
    "Reject all",
  );
  let pending = [];
  let model = "";

  function render() {
    const shown = pending.length > 0;
    marked.hidden = acceptAll.hidden = rejectAll.hidden = !shown;
    if (!shown) return marked.replaceChildren();
    const c = chars(text.value);
    const out = [];
    let at = 0;
    for (const e of pending) {
      out.push(c.slice(at, e.start).join(""));
      const original = c.slice(e.start, e.end).join("");
      out.push(
        h(
          "span",
          { class: `write-edit ${e.kind}`, "data-start": String(e.start), "data-end": String(e.end) },
          h("mark", { class: "wrong", title: `${e.kind} · score ${e.score.toFixed(3)}` }, original),
          h(
            "span",
            { class: "fix" },
            h("span", { class: "suggestion" }, e.suggestion),
            h("button", {
              type: "button",
              class: "small",
              "data-action": "accept",
              title: `Accept “${e.suggestion}” for “${original}”`,
              onclick: () => accept(e),
            }, "Accept"),
            h("button", {
              type: "button",
              class: "small secondary",
              "data-action": "reject",
              title: `Keep “${original}”`,
              onclick: () => reject(e),
            }, "Reject"),
          ),
        ),
      );
      at = e.end;
    }
    out.push(c.slice(at).join(""));
    marked.replaceChildren(...out);
    note.textContent = `${plural(pending.length, "correction")} by ${model}: accept or reject each`;
  }

  function accept(edit) {
    text.value = applyEdit(text.value, edit);
    const shift = chars(edit.suggestion).length - (edit.end - edit.start);
    pending = pending
      .filter((e) => e !== edit)
      .map((e) => (e.start >= edit.end ? { ...e, start: e.start + shift, end: e.end + shift } : e));
    settled("accepted");
  }

  function reject(edit) {
    pending = pending.filter((e) => e !== edit);
    settled("rejected");
  }

  function settled(what) {
    render();
    if (!pending.length) note.textContent = `All corrections ${what}.`;
  }

  acceptAll.addEventListener("click", () => {
    // From the end, so that each edit's offsets still point at the text it was found in.
    for (const e of [...pending].reverse()) text.value = applyEdit(text.value, e);
    pending = [];
    settled("accepted");
  });
  rejectAll.addEventListener("click", () => {
    pending = [];
    settled("rejected");
  });
  text.addEventListener("input", () => changed());

  /** The text changed under the corrections: their offsets no longer hold. */
  function changed() {
    if (!pending.length) return;
    pending = [];
    render();
    note.textContent = "The text changed: check it again.";
  }

  const check = async () => {
    const written = text.value;
    if (!written.trim()) throw new Error("Write some text to check first.");
    const body = { texts: [written] };
    if (threshold.value !== "") body.threshold = Number(threshold.value);
    note.textContent = "checking…";
    let answer;
    try {
      answer = await call("POST", `${BASE}/correct`, body);
    } catch (e) {
      note.textContent = "";
      throw e;
    }
    if (text.value !== written) {
      note.textContent = "The text changed while it was checked: check it again.";
      return;
    }
    model = answer.model;
    pending = [...answer.results[0].edits].sort((a, b) => a.start - b.start);
    render();
    if (!pending.length) note.textContent = `No corrections (${model}).`;
  };

  /** Put `piece` at the cursor (replacing a selection; a text set by the page has it at the end). */
  function insert(piece) {
    text.setRangeText(piece, text.selectionStart, text.selectionEnd, "end");
    changed();
  }

  /** The paragraph the cursor is in (the whole text when it has one). */
  function paragraph() {
    const value = text.value;
    const start = value.lastIndexOf("\n", Math.max(0, text.selectionStart - 1)) + 1;
    const stop = value.indexOf("\n", text.selectionStart);
    const found = value.slice(start, stop < 0 ? undefined : stop).trim();
    return found || value.trim();
  }

  const checkButton = h("button", { type: "button", id: "write-check" }, "Check spelling");
  checkButton.addEventListener("click", () => busy(checkButton, check));
  const view = h(
    "div",
    { class: "panel" },
    field("Your text", text, "wide"),
    h(
      "div",
      { class: "write-tools" },
      checkButton,
      field("threshold (0-1)", threshold),
      acceptAll,
      rejectAll,
    ),
    note,
    marked,
  );
  return {
    view,
    text,
    insert,
    paragraph,
    set: (value) => {
      text.value = value;
      pending = [];
      render();
      note.textContent = "";
    },
    append: (piece) => {
      text.value += piece;
      changed();
    },
  };
}

// --- material suggestions --------------------------------------------------------------------

function suggestions(ed) {
  const list = h("div", { id: "write-suggestions" });
  const k = h("input", { id: "write-k", type: "number", min: 1, max: 20, value: 5 });
  const run = async () => {
    const text = ed.paragraph();
    if (!text) throw new Error("Write a paragraph first: the suggestions are for it.");
    list.setAttribute("aria-busy", "true");
    try {
      const answer = await call("POST", `${BASE}/suggest`, { text, k: Number(k.value) });
      list.replaceChildren(
        h(
          "p",
          { class: "muted", id: "write-suggest-note" },
          answer.shared
            ? `${plural(answer.suggestions.length, "passage")} from the shared corpus and your documents`
            : "Only your documents were searched: this server has no shared corpus " +
                "(llmos write materials build).",
        ),
        ...answer.suggestions.map((s, i) =>
          h(
            "div",
            { class: "write-suggestion", "data-corpus": s.source.corpus, "data-doc": s.source.doc },
            h(
              "p",
              { class: "write-source" },
              `${CORPORA[s.source.corpus] || s.source.corpus} · ${s.source.title}`,
            ),
            h("p", { class: "write-passage" }, s.text),
            bar("cosine", s.similarity, { top: i === 0, title: `score ${s.score.toFixed(4)}` }),
            small("Insert", () => ed.insert(s.text), { "data-action": "insert" }),
          ),
        ),
      );
    } finally {
      list.removeAttribute("aria-busy");
    }
  };
  const button = h("button", { type: "button", id: "write-suggest" }, "Suggest material");
  button.addEventListener("click", () => busy(button, run));
  return h(
    "aside",
    { class: "panel write-side" },
    h("h2", {}, "Material"),
    h(
      "p",
      { class: "muted" },
      "Passages about the paragraph your cursor is in, from the shared corpus and your own documents.",
    ),
    h("div", { class: "write-tools" }, button, field("how many", k)),
    list,
  );
}

// --- continuation ----------------------------------------------------------------------------

function continuation(ed) {
  const adapter = h("select", { id: "write-adapter" }, h("option", { value: "" }, "base model"));
  const maxTokens = h("input", { id: "write-max-new-tokens", type: "number", min: 1, max: 512, value: 60 });
  const strategy = h(
    "select",
    { id: "write-strategy" },
    h("option", { value: "greedy" }, "greedy"),
    h("option", { value: "sample" }, "sample"),
  );
  const shown = h("span", { id: "write-continuation" });
  const output = h("div", { class: "output write-continuation" }, shown);
  const status = h("p", { class: "muted", id: "write-continue-status" });
  let controller = null;
  const stop = h(
    "button",
    { type: "button", class: "secondary", disabled: true, onclick: () => controller?.abort() },
    "Stop",
  );
  const insert = h("button", { type: "button", id: "write-insert", disabled: true }, "Insert");
  insert.addEventListener("click", () => {
    ed.append(shown.textContent);
    insert.disabled = true;
  });

  /** The selector lists the ready adapters, newest first; the newest is chosen at first. */
  function listAdapters(list) {
    const chosen = adapter.options.length > 1 ? adapter.value : null;
    const ready = list
      .filter((a) => a.status === "ready")
      .sort((a, b) => b.created_at.localeCompare(a.created_at));
    adapter.replaceChildren(
      ...ready.map((a) => h("option", { value: a.name }, `adapter “${a.name}”`)),
      h("option", { value: "" }, "base model"),
    );
    if (chosen !== null && [...adapter.options].some((o) => o.value === chosen)) adapter.value = chosen;
  }

  const run = async () => {
    const text = ed.text.value;
    if (!text.trim()) throw new Error("Write something first: the continuation follows your text.");
    const body = { text, stream: true, max_new_tokens: Number(maxTokens.value), strategy: strategy.value };
    if (adapter.value) body.adapter = adapter.value;
    else body.use_adapter = false;
    shown.textContent = "";
    insert.disabled = true;
    status.textContent = "writing…";
    controller = new AbortController();
    stop.disabled = false;
    const started = performance.now();
    try {
      let done = null;
      for await (const { event, data } of events(`${BASE}/continue`, body, { signal: controller.signal })) {
        if (event === "error") throw new ApiError(0, data.type, data.message);
        if (event === "done") {
          done = data;
          break;
        }
        shown.textContent += data.text;
      }
      if (!done) throw new ApiError(0, "network", "The stream ended before the answer was complete.");
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      const by = done.adapter ? `adapter “${done.adapter}”` : "the base model";
      const length = plural(chars(shown.textContent).length, "character");
      status.textContent = `done: ${length} in ${seconds} s by ${done.model} with ${by}`;
      status.dataset.adapter = done.adapter || "";
      insert.disabled = !shown.textContent;
    } catch (e) {
      status.textContent = e.name === "AbortError" ? "stopped" : "failed";
      throw e;
    } finally {
      stop.disabled = true;
      controller = null;
    }
  };
  const button = h("button", { type: "button", id: "write-continue" }, "Continue");
  button.addEventListener("click", () => busy(button, run));
  const view = h(
    "div",
    { class: "panel" },
    h("h2", {}, "Continue"),
    h(
      "p",
      { class: "muted" },
      "The served GPT continues the end of your text, with one of your adapters or the base model.",
    ),
    h(
      "div",
      { class: "write-tools" },
      button,
      field("with", adapter),
      field("max new tokens", maxTokens),
      field("strategy", strategy),
      stop,
    ),
    status,
    output,
    h("div", {}, insert),
  );
  return { view, listAdapters };
}

export async function write() {
  const ed = editor();
  const cont = continuation(ed);
  const [docs, dict, adapt] = await Promise.all([
    documents(ed),
    dictionary(),
    adapters(cont.listAdapters),
  ]);
  return page(
    "Write",
    "The writing assistant: spelling corrections under your own dictionary, material for what " +
      "you write, and continuations in your own style.",
    h("div", { class: "write-layout" }, h("div", {}, ed.view, cont.view), suggestions(ed)),
    h("section", { class: "write-manage" }, docs),
    h("section", { class: "write-manage" }, dict),
    h("section", { class: "write-manage" }, adapt),
  );
}
