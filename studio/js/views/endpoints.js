// Endpoints with their deployments; the default marked and changeable.

import { api, apiPath } from "../api.js";
import { actionButton, h, notice, route, routeWithQuery, table } from "../dom.js";
import { when } from "../format.js";

/** Tags as chips of "key: value" text. */
export function tagList(tags) {
  const entries = Object.entries(tags || {});
  if (!entries.length) return null;
  return h("ul", { class: "tags" }, entries.map(([k, v]) => h("li", {}, `${k}: ${v}`)));
}

/** Make `deployment` the default of `endpoint`. */
export function setDefault(endpoint, deployment) {
  return api("PATCH", apiPath("endpoints", endpoint),
    { body: { defaults: { deployment_name: deployment } } });
}

export function defaultBadge() {
  return h("span", { class: "badge default" }, "default");
}

function deploymentRows(ctx, endpoint, deployments) {
  const current = endpoint.defaults && endpoint.defaults.deployment_name;
  return deployments.map((d) => h("tr", { "data-deployment": d.name },
    h("td", {}, h("a", { href: route("endpoints", endpoint.name, "deployments", d.name) }, d.name),
      d.name === current ? [" ", defaultBadge()] : null),
    h("td", {}, `${d.model.name}:${d.model.version}`),
    h("td", {}, d.code_configuration ? d.code_configuration.scoring_script : "MLflow (built-in)"),
    h("td", { class: "num" }, String(d.settings.mini_batch_size)),
    h("td", { class: "num" }, String(d.settings.instance_count)),
    h("td", {}, when(d.updated_at)),
    h("td", {}, d.name === current ? null : actionButton("Set as default", async () => {
      await setDefault(endpoint.name, d.name);
      ctx.reload();
    }, { class: "small" }))));
}

function endpointCard(ctx, endpoint, deployments) {
  return h("section", { class: "card endpoint", "data-endpoint": endpoint.name },
    h("div", { class: "card-head" },
      h("h2", {}, endpoint.name),
      h("div", { class: "actions" },
        h("a", { class: "button small", href: routeWithQuery("#/jobs", { endpoint: endpoint.name }) },
          "Jobs"),
        h("a", { class: "button small", href: routeWithQuery("#/invoke", { endpoint: endpoint.name }) },
          "Invoke"))),
    endpoint.description ? h("p", { class: "description" }, endpoint.description) : null,
    tagList(endpoint.tags),
    deployments.length
      ? table(["Deployment", "Model", "Scoring script", "Mini-batch size", "Instances",
        "Updated", ""], deploymentRows(ctx, endpoint, deployments), { class: "deployments" })
      : h("p", { class: "muted" }, "No deployments yet: ",
        h("code", {}, `batchfn batch-deployment create --file deployment.yml --endpoint-name ${endpoint.name} --set-default`)));
}

export async function endpointsView(ctx) {
  const endpoints = (await api("GET", "endpoints", { signal: ctx.signal })).value;
  const deployments = await Promise.all(endpoints.map((e) =>
    api("GET", apiPath("endpoints", e.name, "deployments"), { signal: ctx.signal })
      .then((answer) => answer.value)));
  ctx.show(
    h("div", { class: "page-head" }, h("h1", {}, "Endpoints")),
    endpoints.length
      ? endpoints.map((e, i) => endpointCard(ctx, e, deployments[i]))
      : notice("info", "No endpoints yet. Create one with ",
        h("code", {}, "batchfn batch-endpoint create --file endpoint.yml"), "."));
}
