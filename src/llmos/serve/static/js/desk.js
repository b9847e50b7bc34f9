// The customer-service desk: a chat with a knowledge base (POST /v1/apps/support/messages)
// with a side panel saying what the policy did and why, and the human queue of the knowledge
// bases the caller owns or serves (GET/POST /v1/apps/support/tickets...).

import { call } from "./api.js";
import { bar, field, form, h, page } from "./ui.js";

const BASE = "/v1/apps/support";

function turnView(t) {
  return h(
    "div",
    { class: `turn ${t.role}`, "data-role": t.role },
    h("span", { class: "who" }, t.role),
    h("span", { class: "said" }, t.text),
  );
}

function whyView(r) {
  const mood = r.sentiment
    ? `${r.sentiment.label} (negative ${r.sentiment.negative === null ? "?" : r.sentiment.negative.toFixed(2)})`
    : "no sentiment model for this language";
  return h(
    "div",
    { id: "why", "data-action": r.action },
    h("p", {}, h("strong", { id: "why-action" }, r.action), " — ", h("span", { id: "why-reason" }, r.reason)),
    h("p", { class: "muted" }, `language ${r.language} · sentiment ${mood}`),
    r.intent
      ? h(
          "p",
          { id: "why-intent" },
          "intent ",
          h("strong", {}, r.intent.label),
          ` ${r.intent.score.toFixed(2)} (${r.intent.source === "examples" ? "few-shot examples" : "trained head"})`,
        )
      : h("p", { class: "muted" }, "no NLU model for this language"),
    r.slots && r.slots.length
      ? h(
          "p",
          { id: "why-slots" },
          "slots ",
          ...r.slots.map((s) => h("span", { class: "tag", title: `${s.start}-${s.end}` }, `${s.name}=${s.value}`)),
        )
      : "",
    r.form
      ? h(
          "p",
          { id: "why-form" },
          `form ${r.form.intent}: `,
          Object.entries(r.form.slots)
            .map(([k, v]) => `${k}=${v}`)
            .join(", ") || "no slots yet",
        )
      : "",
    r.ticket_id ? h("p", { id: "why-ticket" }, `ticket #${r.ticket_id}`) : "",
    r.sources.length ? h("h3", {}, "Sources") : "",
    h(
      "div",
      { id: "why-sources" },
      r.sources.map((s, i) => bar(s.question, s.similarity, { top: i === 0, title: `entry ${s.id}` })),
    ),
  );
}

export async function chat() {
  const kb = h("input", { id: "chat-kb", placeholder: "OWNER/NAME, e.g. demo/faq-zh" });
  const { kbs } = await call("GET", `${BASE}/kbs`);
  const me = await call("GET", "/v1/me");
  if (kbs.length) kb.value = `${me.name}/${kbs[0].name}`;
  const text = h("input", { id: "chat-text", size: 50, placeholder: "e.g. 东西坏了，我想退货" });
  const log = h("div", { id: "chat-log" });
  const side = h("aside", { id: "chat-side", class: "panel" }, h("p", { class: "muted" }, "Send a message."));
  let conversation = null;
  const show = async () => {
    const conv = await call("GET", `${BASE}/conversations/${conversation}`);
    log.replaceChildren(
      h("p", { class: "muted", id: "chat-status" }, `conversation ${conv.id} with ${conv.kb}: ${conv.status}`),
      ...conv.turns.map(turnView),
    );
  };
  const send = async () => {
    const body = conversation ? { conversation_id: conversation, text: text.value } : { kb: kb.value, text: text.value };
    const r = await call("POST", `${BASE}/messages`, body);
    conversation = r.conversation_id;
    text.value = "";
    side.replaceChildren(whyView(r));
    await show();
  };
  const restart = () => {
    conversation = null;
    log.replaceChildren();
    side.replaceChildren(h("p", { class: "muted" }, "A new conversation starts with the next message."));
  };
  return page(
    "Support chat",
    "Talk to a knowledge base's desk as a customer: it answers, asks which question you meant, " +
      "or hands you to a person; the panel says what it did and why.",
    form("Send", send, field("knowledge base", kb), field("message", text, "wide")),
    h("button", { type: "button", id: "chat-new", onclick: restart }, "New conversation"),
    h("div", { class: "chat" }, log, side),
  );
}

export async function queue() {
  const list = h("tbody", { id: "tickets" });
  const detail = h("div", { id: "ticket" });
  const open = async (id) => {
    const t = await call("GET", `${BASE}/tickets/${id}`);
    const reply = h("textarea", { id: "ticket-reply", placeholder: "Your answer to the customer" });
    const send = async () => {
      await call("POST", `${BASE}/tickets/${id}/reply`, { text: reply.value });
      await open(id);
    };
    const close = async () => {
      await call("POST", `${BASE}/tickets/${id}/close`);
      detail.replaceChildren();
      await refresh();
    };
    detail.replaceChildren(
      h("h2", {}, `Ticket #${t.id} (${t.kb}, ${t.status})`),
      h("p", { class: "muted" }, `escalated because ${t.reason}`),
      h(
        "div",
        { id: "ticket-transcript" },
        t.transcript.map((turn) =>
          h(
            "div",
            {},
            turnView(turn),
            turn.role === "bot" && turn.trace.reason
              ? h("p", { class: "muted trace" }, `${turn.action}: ${turn.trace.reason}`)
              : "",
          ),
        ),
      ),
      t.status === "open" ? form("Reply", send, field("reply", reply, "wide")) : "",
      t.status === "open" ? form("Close ticket", close) : "",
    );
  };
  async function refresh() {
    const { tickets } = await call("GET", `${BASE}/tickets`);
    list.replaceChildren(
      ...tickets.map((t) =>
        h(
          "tr",
          { "data-id": String(t.id) },
          h("td", {}, h("a", { href: "#/queue", onclick: (e) => (e.preventDefault(), open(t.id)) }, `#${t.id}`)),
          h("td", {}, t.kb),
          h("td", {}, t.reason),
          h("td", {}, t.created_at.slice(0, 19).replace("T", " ")),
        ),
      ),
    );
  }
  await refresh();
  return page(
    "Queue",
    "Escalated conversations of the knowledge bases you own or serve, oldest first.",
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["ticket", "knowledge base", "reason", "since"].map((x) => h("th", {}, x)))),
      list,
    ),
    detail,
  );
}
