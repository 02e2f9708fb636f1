// Building the page: elements from data, text always as text.
//
// Everything the API returns (names, descriptions, tags, file names, error messages,
// tracebacks) comes from users, so it only ever reaches the page as text nodes or as the
// value of a vetted attribute. Nothing here parses HTML, and links may only point inside
// the console (`#/...`).

const ATTRIBUTES = new Set([
  "class", "id", "type", "name", "value", "placeholder", "title", "for", "min", "max",
  "step", "required", "disabled", "hidden", "colspan", "role", "open", "selected", "checked",
  "autocomplete", "spellcheck", "inputmode", "href", "download", "tabindex", "pattern",
]);
const SVG_NS = "http://www.w3.org/2000/svg";

function setAttribute(element, name, value) {
  if (value === null || value === undefined || value === false) return;
  if (!ATTRIBUTES.has(name) && !name.startsWith("aria-") && !name.startsWith("data-")) {
    throw new Error(`attribute ${name} is not allowed`);
  }
  if (name === "href" && !String(value).startsWith("#")) {
    throw new Error("links stay inside the console");
  }
  element.setAttribute(name, value === true ? "" : String(value));
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/**
 * An element: `h("a", {href: "#/jobs", class: "x", on: {click: f}}, "text", child, ...)`.
 * Strings become text nodes; arrays are flattened; null, undefined and false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) element.addEventListener(event, handler);
    } else {
      setAttribute(element, name, value);
    }
  }
  return append(element, children);
}

/** An SVG element; attribute values are numbers or fixed words, never user text. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return append(element, children);
}

/** Replace the content of `element` with `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** A `#/...` link whose path segments are encoded (names may hold any character). */
export function route(...segments) {
  return "#/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
}

/** A `#/...?query` link (empty values left out). */
export function routeWithQuery(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** A small notice: kind is "error", "info" or "ok". */
export function notice(kind, ...children) {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
    ...children);
}

/** A two-column table of [label, value] rows (rows whose value is null are left out). */
export function facts(rows) {
  return h("dl", { class: "facts" }, rows
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
}

/** A table with a header row; `rows` are arrays of cells (strings or nodes). */
export function table(headers, rows, props = {}) {
  return h("table", props,
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", {}, text)))),
    h("tbody", {}, rows));
}

/** A button that runs `action` and is disabled meanwhile. */
export function actionButton(label, action, props = {}) {
  const button = h("button", { type: "button", ...props });
  button.textContent = label;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } finally {
      if (button.isConnected) button.disabled = false;
    }
  });
  return button;
}
