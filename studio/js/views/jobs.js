// All jobs, newest first, filtered by endpoint, deployment and status, a page at a time.

import { api, apiPath } from "../api.js";
import { h, notice, routeWithQuery } from "../dom.js";
import { STATUSES } from "../format.js";
import { JobTable } from "./job_table.js";

const PAGE_SIZE = 20;
const REFRESH_MS = 3000;

function select(name, label, options, chosen) {
  const element = h("select", { name, id: `filter-${name}` },
    h("option", { value: "" }, `all ${label}s`),
    options.map((value) => h("option", { value, selected: value === chosen }, value)));
  return [h("label", { for: `filter-${name}` }, label), element];
}

function filterForm(query, endpoints, deployments) {
  const form = h("form", { class: "filters", id: "job-filters" },
    select("endpoint", "endpoint", endpoints, query.endpoint || ""),
    select("deployment", "deployment", deployments, query.deployment || ""),
    select("status", "status", STATUSES, query.status || ""));
  form.addEventListener("change", (event) => {
    const values = Object.fromEntries(new FormData(form));
    if (event.target.name === "endpoint") values.deployment = "";
    location.hash = routeWithQuery("#/jobs", values);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  return form;
}

// The API pages jobs with continuation tokens: "Older" follows the page's token, "Newest"
// goes back to the first page (the browser's Back goes to the previous one).
function pager(filters, page, continuation) {
  const link = (label, target, enabled) => enabled
    ? h("a", { class: "button small", href: routeWithQuery("#/jobs", { ...filters, ...target }) },
      label)
    : h("span", { class: "button small disabled" }, label);
  return h("nav", { class: "pager" },
    link("Newest", {}, page > 1),
    h("span", {}, `page ${page}`),
    link("Older", { page: page + 1, continuation }, Boolean(continuation)));
}

export async function jobsView(ctx, params, query) {
  const { signal } = ctx;
  const endpoints = (await api("GET", "endpoints", { signal })).value.map((e) => e.name);
  let deployments = [];
  if (query.endpoint && endpoints.includes(query.endpoint)) {
    deployments = (await api("GET", apiPath("endpoints", query.endpoint, "deployments"),
      { signal })).value.map((d) => d.name);
  }
  const filters = { endpoint: query.endpoint, deployment: query.deployment, status: query.status };
  const page = query.continuation ? Math.max(2, Number.parseInt(query.page, 10) || 2) : 1;
  const listed = await api("GET", "jobs", {
    query: { ...filters, top: PAGE_SIZE, continuation: query.continuation }, signal });
  const rows = listed.value;
  const jobTable = new JobTable(rows);
  ctx.show(
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"),
      h("a", { class: "button", href: routeWithQuery("#/invoke", { endpoint: query.endpoint }) },
        "Invoke")),
    filterForm(query, endpoints, deployments),
    rows.length || page > 1 || listed.continuation
      ? [rows.length ? jobTable.element : notice("info", "No more jobs match on this page."),
        page > 1 || listed.continuation ? pager(filters, page, listed.continuation) : null]
      : notice("info", "No jobs match."));
  if (!rows.length) return;
  const running = await jobTable.refresh(signal);
  if (running) ctx.repeat(() => jobTable.refresh(signal), REFRESH_MS);
}
