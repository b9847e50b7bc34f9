// The console's shell: sign-in with an API key (checked with GET /v1/me), hash routing to a
// page per capability, and a last-resort handler so that no failure leaves a blank page.

import { call, key } from "./api.js";
import { busy, clearError, field, h, showError } from "./ui.js";
import { admin } from "./admin.js";
import * as pages from "./pages.js";
import { images } from "./images.js";
import { jobs } from "./jobs.js";
import { profile } from "./profile.js";
import { recommend } from "./recommend.js";
import { support } from "./support.js";
import { chat, queue } from "./desk.js";
import { write } from "./write.js";

const routes = {
  models: ["Models", pages.models],
  classify: ["Classify", pages.classify],
  tag: ["Tag", pages.tag],
  "fill-mask": ["Fill-mask", pages.fillMask],
  generate: ["Generate", pages.generate],
  search: ["Embed & search", pages.search],
  images: ["Images", images],
  support: ["Knowledge bases", support],
  chat: ["Support chat", chat],
  queue: ["Queue", queue],
  recommend: ["For you", recommend],
  write: ["Write", write],
  jobs: ["Jobs", jobs],
  profile: ["Profile", profile],
  admin: ["Admin", admin],
};

const state = { user: null, catalog: null };
const ctx = {
  get catalog() {
    return state.catalog;
  },
  reload: async () => (state.catalog = await call("GET", "/v1/models")),
};
const $ = (id) => document.getElementById(id);
let renders = 0;

function signInForm() {
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", placeholder: "llmos_…" });
  const button = h("button", { type: "submit", id: "sign-in" }, "Sign in");
  const submit = (e) => {
    e.preventDefault();
    busy(button, async () => {
      const apiKey = input.value.trim();
      const user = await call("GET", "/v1/me", undefined, { apiKey });
      key.set(apiKey);
      await enter(user);
    });
  };
  return h(
    "form",
    { class: "panel signin", onsubmit: submit },
    h("h1", {}, "Sign in"),
    h(
      "p",
      { class: "muted" },
      "Paste your API key (",
      h("code", {}, "llmos users create NAME"),
      " prints one). It is kept in this tab only.",
    ),
    field("API key", input, "wide"),
    button,
  );
}

async function render() {
  const token = ++renders;
  clearError();
  const signedIn = state.user !== null;
  document.body.classList.toggle("signed-out", !signedIn);
  $("nav").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  $("nav-admin").hidden = !(signedIn && state.user.is_admin);
  $("who").textContent = signedIn
    ? `Signed in as ${state.user.name}${state.user.is_admin ? " (admin)" : ""}`
    : "";
  if (!signedIn) {
    $("page").replaceChildren(signInForm());
    $("api-key").focus();
    return;
  }
  const name = location.hash.replace(/^#\/?/, "") || "models";
  for (const a of document.querySelectorAll("nav a"))
    a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  const route = routes[name];
  if (!route) {
    $("page").replaceChildren(h("h1", {}, "Not found"), h("p", {}, `There is no page “${name}”.`));
    return;
  }
  const [title, view] = route;
  try {
    if (!state.catalog) await ctx.reload();
    const content = await view(ctx);
    if (token === renders) $("page").replaceChildren(content);
  } catch (e) {
    if (token !== renders) return;
    $("page").replaceChildren(
      h("h1", {}, title),
      h("p", { class: "muted" }, "This page could not be shown; the reason is above."),
    );
    showError(e);
  }
}

async function enter(user) {
  state.user = user;
  state.catalog = null;
  if (location.hash && location.hash !== "#/") await render();
  else location.hash = "#/models"; // hashchange renders
}

function signOut() {
  key.clear();
  state.user = null;
  state.catalog = null;
  history.replaceState(null, "", location.pathname);
  render();
}

async function start() {
  window.addEventListener("error", (e) => showError(e.error || e.message));
  window.addEventListener("unhandledrejection", (e) => showError(e.reason));
  window.addEventListener("hashchange", render);
  $("sign-out").addEventListener("click", signOut);
  if (key.get()) {
    try {
      return await enter(await call("GET", "/v1/me"));
    } catch (e) {
      key.clear();
      await render();
      showError(e);
      return;
    }
  }
  await render();
}

start();
