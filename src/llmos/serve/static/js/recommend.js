// The recommendation app (/v1/apps/recommend), "For you": the caller's list with why each item
// is there and Like / Dislike / Hide on each (an event, then the list again: the server reads
// the events at every call), more variety and a one-off wish, onboarding (interests, a wish,
// blocked tags), what the events show of the caller's tastes, and a catalog search with each
// item's similar ones. Every route is the caller's own.

import { call } from "./api.js";
import { bar, busy, field, form, h, page, plural } from "./ui.js";

const BASE = "/v1/apps/recommend";
const K = 12;
const ACTIONS = [
  ["like", "Like", ""],
  ["dislike", "Dislike", "secondary"],
  ["hide", "Hide", "secondary"],
];

const event = (kind, item) => call("POST", `${BASE}/events`, { events: [{ kind, item }] });

function tagList(tags) {
  return h("span", { class: "rec-tags" }, tags.map((t) => h("span", { class: "tag" }, t)));
}

/** One recommended item: title, tags, why, and (given `onAct`) its three buttons. */
function card(item, onAct) {
  return h(
    "div",
    { class: "rec-card", "data-id": item.id, "data-source": item.source },
    h("div", { class: "rec-title" }, item.title),
    tagList(item.tags),
    h("p", { class: "rec-reason" }, item.reason),
    h("p", { class: "muted rec-score" }, `${item.source} · score ${item.score.toFixed(3)}`),
    onAct &&
      h(
        "div",
        { class: "rec-actions" },
        ACTIONS.map(([kind, label, cls]) => {
          const button = h("button", { type: "button", class: `small ${cls}`, "data-action": kind }, label);
          button.addEventListener("click", () => busy(button, () => onAct(kind, item)));
          return button;
        }),
      ),
  );
}

/** A list of catalog items (profile panel): title and tags, or "none". */
function itemList(id, items) {
  return h(
    "ul",
    { id, class: "rec-items" },
    items.length
      ? items.map((i) => h("li", { "data-id": i.id }, i.title, " ", tagList(i.tags)))
      : h("li", { class: "muted" }, "none"),
  );
}

function checkboxes(name, tags, chosen) {
  return h(
    "div",
    { class: "rec-chips", id: `rec-${name}` },
    tags.map(({ tag, items }) =>
      h(
        "label",
        { class: "check chip" },
        h("input", { type: "checkbox", name, value: tag, checked: chosen.includes(tag) }),
        `${tag} (${items})`,
      ),
    ),
  );
}

const checked = (box) => Array.from(box.querySelectorAll("input:checked"), (i) => i.value);

export async function recommend() {
  // --- the list ----------------------------------------------------------------------------
  const list = h("div", { id: "rec-list" });
  const summary = h("p", { class: "muted", id: "rec-summary" });
  const diversity = h("input", { id: "rec-diversity", type: "range", min: 0, max: 1, step: 0.1, value: 0 });
  const diversityShown = h("span", { id: "rec-diversity-value" }, "0");
  const wish = h("input", { id: "rec-wish", size: 30, placeholder: "this time only, e.g. something scary" });
  let lists = 0; // a slower, older answer never replaces a newer one
  async function loadList() {
    const token = ++lists;
    const query = new URLSearchParams({ k: String(K) });
    if (Number(diversity.value) > 0) query.set("diversity", diversity.value);
    if (wish.value.trim()) query.set("wish", wish.value.trim());
    list.setAttribute("aria-busy", "true");
    try {
      const answer = await call("GET", `${BASE}?${query}`);
      if (token !== lists) return;
      summary.textContent = `${plural(answer.items.length, "item")} from the catalog “${answer.catalog}”`;
      list.replaceChildren(
        ...(answer.items.length
          ? answer.items.map((item) => card(item, act))
          : [h("p", { class: "muted" }, "Nothing left to recommend.")]),
      );
    } finally {
      if (token === lists) list.removeAttribute("aria-busy");
    }
  }

  // --- what the events show ----------------------------------------------------------------
  const tastes = h("div", { id: "rec-profile" });
  async function loadProfile() {
    const view = await call("GET", `${BASE}/profile`);
    const total = view.top_tags.reduce((sum, [, w]) => sum + w, 0);
    tastes.replaceChildren(
      h("h3", {}, "Top tags"),
      h(
        "div",
        { id: "rec-top-tags" },
        view.top_tags.length
          ? view.top_tags.map(([tag, w], i) =>
              bar(tag, total > 0 ? w / total : 0, { top: i === 0, title: `weight ${w}` }),
            )
          : h("p", { class: "muted" }, "Like something to show your tastes here."),
      ),
      h("h3", {}, "Recently liked"),
      itemList("rec-recent", view.recent),
      h("h3", {}, "Disliked"),
      itemList("rec-disliked", view.disliked),
      h("h3", {}, "Hidden"),
      itemList("rec-hidden", view.hidden),
    );
    return view;
  }

  const refresh = () => Promise.all([loadList(), loadProfile()]);
  async function act(kind, item) {
    await event(kind, item.id);
    await refresh();
  }

  const [{ tags }, view] = await Promise.all([call("GET", `${BASE}/tags`), loadProfile(), loadList()]);

  // --- onboarding --------------------------------------------------------------------------
  const interests = checkboxes("interest", tags, view.preferences.interests);
  const blocked = checkboxes("blocked", tags, view.preferences.blocked_tags);
  const savedWish = h("input", {
    id: "rec-pref-wish",
    size: 40,
    value: view.preferences.wish,
    placeholder: "想看轻松的喜剧 / something light and funny",
  });
  const saved = h("p", { class: "muted", id: "rec-saved" });
  const save = async () => {
    const body = { interests: checked(interests), wish: savedWish.value, blocked_tags: checked(blocked) };
    const preferences = await call("PUT", `${BASE}/onboarding`, body);
    saved.textContent =
      `Saved: ${plural(preferences.interests.length, "interest")}, ` +
      `${plural(preferences.blocked_tags.length, "blocked tag")}` +
      (preferences.wish ? `, wish “${preferences.wish}”` : "");
    await refresh();
  };

  // --- catalog search ----------------------------------------------------------------------
  const q = h("input", { id: "rec-query", size: 30, placeholder: "e.g. Scream" });
  const results = h("div", { id: "rec-results" });
  const found = (item) => {
    const similar = h("div", { class: "rec-similar" });
    const showSimilar = async () => {
      const answer = await call("GET", `${BASE}/similar/${encodeURIComponent(item.id)}?k=10`);
      similar.replaceChildren(
        h("p", { class: "muted" }, `Similar to “${item.title}”`),
        ...(answer.items.length
          ? answer.items.map((i) => card(i))
          : [h("p", { class: "muted" }, "nothing similar")]),
      );
    };
    const like = async () => {
      await event("like", item.id);
      await refresh();
    };
    const button = (action, label, run, cls = "") => {
      const b = h("button", { type: "button", class: `small ${cls}`, "data-action": action }, label);
      b.addEventListener("click", () => busy(b, run));
      return b;
    };
    return h(
      "div",
      { class: "rec-item", "data-id": item.id },
      h("span", { class: "rec-title" }, item.title),
      " ",
      tagList(item.tags),
      " ",
      button("similar", "Similar", showSimilar, "secondary"),
      " ",
      button("like", "Like", like),
      similar,
    );
  };
  const search = async () => {
    const answer = await call("GET", `${BASE}/items?${new URLSearchParams({ q: q.value, k: "20" })}`);
    results.replaceChildren(
      ...(answer.items.length ? answer.items.map(found) : [h("p", { class: "muted" }, "no items")]),
    );
  };

  const reload = () => busy(diversity, loadList);
  diversity.addEventListener("input", () => (diversityShown.textContent = diversity.value));
  diversity.addEventListener("change", reload);

  return page(
    "For you",
    "Recommendations from the catalog, each with why. Like, dislike or hide one and the list " +
      "follows at once (your events are read at every request; nothing is retrained).",
    form(
      "Refresh",
      loadList,
      field("More variety", h("span", { class: "rec-range" }, diversity, diversityShown)),
      field("Wish (this list only)", wish, "wide"),
    ),
    h(
      "div",
      { class: "rec-layout" },
      h("div", {}, summary, list),
      h("aside", { class: "panel rec-side" }, h("h2", {}, "Your tastes"), tastes),
    ),
    h("h2", {}, "Tell us what you like"),
    form(
      "Save",
      save,
      h("p", { class: "muted" }, "Interests"),
      interests,
      field("What would you like to watch?", savedWish, "wide"),
      h("p", { class: "muted" }, "Never show"),
      blocked,
      saved,
    ),
    h("h2", {}, "Search the catalog"),
    form("Search", search, field("words", q, "wide")),
    results,
  );
}
