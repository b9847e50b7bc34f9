// The admin page: users (GET/POST /v1/users) and models loaded or unloaded now
// (POST /v1/models/load|unload). The navigation shows it to admins only (GET /v1/me says
// is_admin); anyone else who opens it gets the server's own refusal (403) in the alert region.

import { call } from "./api.js";
import { busy, field, form, h, mb, page } from "./ui.js";

function usersTable() {
  const body = h("tbody", { id: "users" });
  const show = (users) =>
    body.replaceChildren(
      ...users.map((u) =>
        h(
          "tr",
          { "data-user": u.name },
          h("td", { class: "num" }, String(u.id)),
          h("td", {}, u.name),
          h("td", {}, u.is_admin ? "yes" : "no"),
        ),
      ),
    );
  const head = h("tr", {}, ["id", "name", "admin"].map((x) => h("th", {}, x)));
  return { el: h("table", {}, h("thead", {}, head), body), show };
}

/** The create-user form; the new key is shown once, in a panel of its own. */
function createUser(refresh) {
  const name = h("input", { id: "user-name", placeholder: "e.g. carol" });
  const admin = h("input", { id: "user-admin", type: "checkbox" });
  const created = h("div", { class: "panel once", id: "created", hidden: true });
  const create = async () => {
    created.hidden = true; // a key shown earlier goes away, whatever this call answers
    created.replaceChildren();
    const user = await call("POST", "/v1/users", { name: name.value, admin: admin.checked });
    created.replaceChildren(
      h("p", {}, h("strong", {}, `API key of ${user.name}`), user.is_admin ? " (admin)" : ""),
      h("code", { class: "key", id: "new-key" }, user.api_key),
      h(
        "p",
        { class: "muted" },
        "Shown this once: the server stores only its hash. Copy it now and hand it over; " +
          "a lost key is replaced with ",
        h("code", {}, "llmos users key NAME"),
        ".",
      ),
    );
    created.hidden = false;
    name.value = "";
    admin.checked = false;
    await refresh();
  };
  return [form("Create", create, field("name", name), field("admin", admin, "check")), created];
}

function modelsTable(catalog) {
  const summary = h("p", { class: "muted", id: "memory-used" });
  const body = h("tbody", { id: "admin-models" });
  const show = ({ models, memory_used_bytes, memory_budget_bytes }) => {
    summary.textContent = `${mb(memory_used_bytes)} of ${mb(memory_budget_bytes)} MB loaded.`;
    body.replaceChildren(
      ...models.map((m) => {
        const action = m.loaded ? "unload" : "load";
        const change = async () => show(await call("POST", `/v1/models/${action}`, { model: m.name }));
        const button = h("button", { type: "button", class: "secondary" }, m.loaded ? "Unload" : "Load");
        button.addEventListener("click", () => busy(button, change));
        return h(
          "tr",
          { "data-model": m.name },
          h("td", {}, h("strong", {}, m.name)),
          h("td", {}, m.task),
          h("td", { class: "num" }, mb(m.size_bytes)),
          h("td", {}, m.loaded ? "yes" : "no"),
          h("td", {}, button),
        );
      }),
    );
  };
  show(catalog);
  const head = h("tr", {}, ["name", "task", "size MB", "loaded", ""].map((x) => h("th", {}, x)));
  return [summary, h("table", {}, h("thead", {}, head), body)];
}

export async function admin(ctx) {
  const users = usersTable();
  const refresh = async () => users.show(await call("GET", "/v1/users"));
  await refresh(); // a non-admin stops here, with the server's 403
  return page(
    "Admin",
    "Users and their keys, and which models are in memory (admins only).",
    h("h2", {}, "Users"),
    users.el,
    h("h2", {}, "New user"),
    createUser(refresh),
    h("h2", {}, "Models"),
    h(
      "p",
      { class: "muted" },
      "A model also loads on its first request; unloading serves its queued requests first.",
    ),
    modelsTable(await ctx.reload()),
  );
}
