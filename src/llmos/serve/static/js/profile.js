// The signed-in user's own data: profile (GET/PATCH /v1/me/profile), conversation memory
// (GET/POST /v1/me/memory) and events (GET/POST /v1/me/events), and the API key itself (rotated
// with POST /v1/me/keys then DELETE /v1/me/key). Every route is the caller's: there is no user
// id to pick.

import { call, key } from "./api.js";
import { field, form, h, page } from "./ui.js";

const when = (iso) => iso.slice(0, 19).replace("T", " ");

/** A table with a header row and a tbody of `id` (rows replaced on refresh). */
function table(id, head) {
  const body = h("tbody", { id });
  const row = (cells) => h("tr", {}, cells.map((x) => h("td", {}, String(x))));
  return {
    el: h("table", {}, h("thead", {}, h("tr", {}, head.map((x) => h("th", {}, x)))), body),
    fill: (rows) => body.replaceChildren(...rows.map(row)),
  };
}

/** Text as typed: JSON when it parses (numbers, objects, true), else the text itself. */
function jsonOrText(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export async function profile() {
  const shown = h("pre", { class: "json", id: "profile" });
  const memory = table("memory", ["when", "role", "content"]);
  const events = table("events", ["when", "kind", "item", "text", "value"]);
  const refresh = async () => {
    const [{ profile }, { memory: messages }, { events: rows }] = await Promise.all([
      call("GET", "/v1/me/profile"),
      call("GET", "/v1/me/memory?limit=20"),
      call("GET", "/v1/me/events?limit=20"),
    ]);
    shown.textContent = JSON.stringify(profile, null, 2);
    memory.fill(messages.map((m) => [when(m.created_at), m.role, m.content]));
    events.fill(rows.map((e) => [when(e.created_at), e.kind, e.item ?? "", e.text ?? "", e.value ?? ""]));
  };
  await refresh();

  const name = h("input", { id: "profile-key", placeholder: "e.g. city" });
  const value = h("input", { id: "profile-value", placeholder: 'e.g. 北京 or {"a": 1}; empty removes' });
  const patch = async () => {
    const parsed = value.value === "" ? null : jsonOrText(value.value);
    await call("PATCH", "/v1/me/profile", { changes: { [name.value]: parsed } });
    await refresh();
  };

  const role = h("select", { id: "memory-role" }, h("option", {}, "user"), h("option", {}, "assistant"));
  const content = h("textarea", { id: "memory-content", placeholder: "e.g. 我下周想去北京，住哪里好？" });
  const remember = async () => {
    await call("POST", "/v1/me/memory", { role: role.value, content: content.value });
    content.value = "";
    await refresh();
  };

  const kind = h("input", { id: "event-kind", placeholder: "e.g. rating" });
  const item = h("input", { id: "event-item", placeholder: "e.g. 酒店 (optional)" });
  const score = h("input", { id: "event-value", type: "number", step: "any", placeholder: "optional" });
  const record = async () => {
    const body = { kind: kind.value };
    if (item.value !== "") body.item = item.value;
    if (score.value !== "") body.value = Number(score.value);
    await call("POST", "/v1/me/events", body);
    await refresh();
  };

  // Key rotation: a new key is issued with the old one, the old one is revoked, and this tab
  // signs in with the new one, shown once.
  const rotated = h("div", { class: "panel once", id: "rotated", hidden: true });
  const rotate = async () => {
    rotated.hidden = true;
    rotated.replaceChildren();
    const { api_key } = await call("POST", "/v1/me/keys");
    await call("DELETE", "/v1/me/key"); // sent with the old key: revokes it
    key.set(api_key);
    rotated.replaceChildren(
      h("p", {}, h("strong", {}, "Your new API key")),
      h("code", { class: "key", id: "rotated-key" }, api_key),
      h(
        "p",
        { class: "muted" },
        "The old key is revoked and this tab now uses the new one. Shown this once: the " +
          "server stores only its hash, so copy it now.",
      ),
    );
    rotated.hidden = false;
  };

  return page(
    "Profile",
    "Your own profile, conversation memory and newest events " +
      "(/v1/me/profile, /v1/me/memory, /v1/me/events).",
    shown,
    form("Set", patch, field("key", name), field("value (JSON or text)", value)),
    h("h2", {}, "Conversation memory"),
    h("p", { class: "muted" }, "Your last 20 messages, oldest first."),
    memory.el,
    form("Remember", remember, field("role", role), field("message", content, "wide")),
    h("h2", {}, "Events"),
    h("p", { class: "muted" }, "Your 20 newest events, newest first."),
    events.el,
    form("Record", record, field("kind", kind), field("item", item), field("value", score)),
    h("h2", {}, "API key"),
    h(
      "p",
      { class: "muted" },
      "Rotate it when it may have leaked: a new key replaces the one this tab signed in with.",
    ),
    form("Rotate key", rotate),
    rotated,
  );
}
