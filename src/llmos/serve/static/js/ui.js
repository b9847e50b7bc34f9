// Small DOM helpers: elements built with textContent only (no HTML from the server is ever
// parsed), the alert region, score bars, pickers, and the page and form every page is built of.

/** h("p", {class: "x"}, "text", child) -> <p class="x">text…</p>; on* attributes are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "style" && typeof value === "object") {
      for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, v);
    } else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) el.append(child);
  }
  return el;
}

const alertBox = () => document.getElementById("alert");

export function showError(error) {
  const box = alertBox();
  const status = error && error.status ? ` (HTTP ${error.status}${error.type ? `, ${error.type}` : ""})` : "";
  box.textContent = `${(error && error.message) || String(error)}${status}`;
  box.hidden = false;
}

export function clearError() {
  const box = alertBox();
  box.textContent = "";
  box.hidden = true;
}

export const percent = (score) => `${(score * 100).toFixed(1)}%`;

/** One labelled bar: name, a track filled to the score, the score in percent. */
export function bar(name, score, { top = false, title } = {}) {
  const width = `${Math.max(0, Math.min(1, score)) * 100}%`;
  return h(
    "div",
    { class: top ? "row top" : "row", "data-name": name, "data-score": String(score), title },
    h("span", { class: "name" }, name),
    h("span", { class: "track" }, h("span", { class: "fill", style: { width } })),
    h("span", { class: "value" }, percent(score)),
  );
}

/** A <select> of the models that answer `capability`, or null when there is none. */
export function modelPicker(models, capability, id = "model") {
  const usable = models.filter((m) => m.capabilities.includes(capability));
  if (!usable.length) return null;
  return h(
    "select",
    { id, name: "model" },
    usable.map((m) => h("option", { value: m.name }, `${m.name} (${m.task}, ${m.language})`)),
  );
}

export const lines = (text) =>
  text
    .split("\n")
    .map((t) => t.trim())
    .filter(Boolean);

/** A labelled form field. */
export const field = (label, input, cls) => h("label", { class: cls }, label, input);

/** Run an async action with the form's button disabled; failures go to the alert region. */
export async function busy(button, action) {
  clearError();
  button.disabled = true;
  try {
    await action();
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
  } finally {
    button.disabled = false;
  }
}

/** Distinct, light colours for label types (golden-angle hues). */
export const colour = (i) => `hsl(${Math.round((i * 137.5) % 360)} 75% 82%)`;

export const mb = (bytes) => (bytes / 2 ** 20).toFixed(1);
export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** A page: its title, an optional muted introduction, then the content. */
export function page(title, intro, ...children) {
  return h("div", {}, h("h1", {}, title), intro && h("p", { class: "muted" }, intro), ...children);
}

/** A form whose submit button runs `action` (errors go to the alert region). */
export function form(label, action, ...fields) {
  const button = h("button", { type: "submit" }, label);
  return h(
    "form",
    {
      class: "panel",
      onsubmit: (e) => {
        e.preventDefault();
        busy(button, action);
      },
    },
    ...fields,
    h("div", {}, button),
  );
}
