// batchfn studio: key handling, navigation between views, live refresh.
//
// Nothing is shown, and no API call is made, until the tab has a function key. `batchfn
// studio` opens the console as .../studio/#key=<key>[&view=/jobs/<name>]; the key moves to
// sessionStorage at once and the fragment is replaced, so it leaves the address bar and
// the tab's history entry.

import { api, currentKey, forgetKey, storeKey } from "./api.js";
import { h, notice, replace } from "./dom.js";
import { deploymentView } from "./views/deployment.js";
import { endpointsView } from "./views/endpoints.js";
import { invokeView } from "./views/invoke.js";
import { jobView } from "./views/job.js";
import { jobsView } from "./views/jobs.js";

const ROUTES = [
  [/^\/endpoints$/, endpointsView, "endpoints"],
  [/^\/endpoints\/([^/]+)\/deployments\/([^/]+)$/, deploymentView, "endpoints"],
  [/^\/jobs$/, jobsView, "jobs"],
  [/^\/jobs\/([^/]+)$/, jobView, "jobs"],
  [/^\/invoke$/, invokeView, "invoke"],
];
const HOME = "/endpoints";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const forgetButton = document.getElementById("forget-key");
let running = null; // the AbortController of the view on screen

function takeKeyFromFragment() {
  const fragment = location.hash.slice(1);
  if (fragment.startsWith("/")) return;
  const params = new URLSearchParams(fragment);
  if (!params.has("key")) return;
  const key = params.get("key").trim();
  if (key) storeKey(key);
  const view = params.get("view") || "";
  const next = view.startsWith("/") ? view : HOME;
  history.replaceState(null, "", `${location.pathname}${location.search}#${next}`);
}

function parseHash() {
  const fragment = location.hash.slice(1) || HOME;
  const [path, search] = fragment.split("?", 2);
  return { path, query: Object.fromEntries(new URLSearchParams(search || "")) };
}

/** What a view gets: where to draw, its cancel signal, and a refresh loop. */
function viewContext(signal) {
  return {
    signal,
    show(...children) {
      if (!signal.aborted) replace(main, ...children);
    },
    /** Draw the current view again from fresh data. */
    reload() {
      render();
    },
    /** Call `step` every `ms` until the view is left or `step` returns false. */
    repeat(step, ms) {
      const loop = async () => {
        while (!signal.aborted) {
          await new Promise((resolve) => setTimeout(resolve, ms));
          if (signal.aborted) return;
          try {
            if ((await step()) === false) return;
          } catch (error) {
            if (signal.aborted || error.name === "AbortError") return;
            showRefreshError(error);
          }
        }
      };
      loop();
    },
  };
}

function showRefreshError(error) {
  const banner = main.querySelector(".refresh-error") || h("div", { class: "refresh-error" });
  replace(banner, notice("error", `Refresh failed: ${error.message}`));
  if (!banner.isConnected) main.prepend(banner);
}

async function render() {
  if (running) running.abort();
  if (!currentKey()) {
    showKeyForm();
    return;
  }
  nav.hidden = false;
  forgetButton.hidden = false;
  const { path, query } = parseHash();
  const found = ROUTES.map(([pattern, view, section]) => [pattern.exec(path), view, section])
    .find(([match]) => match);
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("active", Boolean(found) && link.dataset.section === found[2]);
  }
  if (!found) {
    replace(main, notice("error", "There is no such page in batchfn studio. ",
      h("a", { href: `#${HOME}` }, "Go to the endpoints")));
    return;
  }
  const [match, view] = found;
  const controller = new AbortController();
  running = controller;
  replace(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const params = match.slice(1).map((segment) => decodeURIComponent(segment));
    await view(viewContext(controller.signal), params, query);
  } catch (error) {
    if (controller.signal.aborted || error.name === "AbortError") return;
    if (error.status === 401) return; // the key form is on screen
    replace(main, notice("error", error.message));
  }
}

function showKeyForm(message) {
  nav.hidden = true;
  forgetButton.hidden = true;
  const input = h("input", {
    type: "password", id: "key-input", name: "key", autocomplete: "off", required: true,
    spellcheck: "false", placeholder: "function key",
  });
  const form = h("form", { class: "key-form card", id: "key-form" },
    h("h1", {}, "batchfn studio"),
    h("p", {}, "This console shows endpoints, deployments and jobs once it has a function key. ",
      "Run ", h("code", {}, "batchfn studio"), " to open it with your key, or paste one here."),
    message ? notice("error", message) : null,
    h("label", { for: "key-input" }, "Function key"),
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Open")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    storeKey(input.value.trim());
    try {
      await api("GET", "endpoints");
    } catch (error) {
      forgetKey();
      showKeyForm(error.status === 401 ? "That key was refused." : error.message);
      return;
    }
    render();
  });
  replace(main, form);
  input.focus();
}

window.addEventListener("studio:unauthorized", () => {
  if (running) running.abort();
  forgetKey();
  showKeyForm("The key was refused: paste a valid function key.");
});
window.addEventListener("hashchange", () => {
  takeKeyFromFragment();
  render();
});
forgetButton.addEventListener("click", () => {
  if (running) running.abort();
  forgetKey();
  showKeyForm();
});

takeKeyFromFragment();
render();
