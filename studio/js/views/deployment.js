// One deployment: settings, model and code assets, environment, and its jobs.

import { api, apiPath } from "../api.js";
import { actionButton, facts, h, notice, routeWithQuery, table } from "../dom.js";
import { bytes, count, when } from "../format.js";
import { JobTable } from "./job_table.js";
import { defaultBadge, setDefault, tagList } from "./endpoints.js";

const REFRESH_MS = 3000;

function settingsFacts(settings) {
  const tabular = settings.input_format && settings.input_format !== "files";
  return facts([
    ["Mini-batch size (files)", tabular ? null : String(settings.mini_batch_size)],
    ["Mini-batch size (rows)", tabular ? String(settings.mini_batch_size) : null],
    ["Input format", tabular ? settings.input_format : null],
    ["Passthrough columns", settings.passthrough_columns && settings.passthrough_columns.length
      ? settings.passthrough_columns.join(", ") : null],
    ["Max concurrency per instance", String(settings.max_concurrency_per_instance)],
    ["Instance count", String(settings.instance_count)],
    ["Max retries", String(settings.retry_settings.max_retries)],
    ["Timeout per mini-batch", `${settings.retry_settings.timeout} s`],
    ["Error threshold", settings.error_threshold < 0 ? "none (-1)" : String(settings.error_threshold)],
    ["Output action", settings.output_action],
    ["Output file name", settings.output_file_name],
    ["Output format", settings.output_format],
    ["Logging level", settings.logging_level],
  ]);
}

function assetRow(label, asset) {
  return h("tr", {}, h("td", {}, label), h("td", {}, asset.name), h("td", {}, asset.version),
    h("td", { class: "num" }, count(asset.files)), h("td", { class: "num" }, bytes(asset.size)),
    h("td", { class: "digest", title: asset.digest }, asset.digest.slice(0, 12)));
}

export async function deploymentView(ctx, [endpointName, name]) {
  const { signal } = ctx;
  const [endpoint, deployment, jobs] = await Promise.all([
    api("GET", apiPath("endpoints", endpointName), { signal }),
    api("GET", apiPath("endpoints", endpointName, "deployments", name), { signal }),
    api("GET", apiPath("endpoints", endpointName, "deployments", name, "jobs"), { signal }),
  ]);
  const isDefault = endpoint.defaults && endpoint.defaults.deployment_name === name;
  const variables = Object.entries(deployment.environment_variables || {});
  const rows = jobs.value.slice(0, 50);
  const jobTable = new JobTable(rows, { showDeployment: false });
  ctx.show(
    h("div", { class: "page-head" },
      h("h1", {}, h("span", { class: "muted" }, `${endpointName} / `), deployment.name,
        isDefault ? [" ", defaultBadge()] : null),
      h("div", { class: "actions" },
        isDefault ? null : actionButton("Set as default", async () => {
          await setDefault(endpointName, name);
          ctx.reload();
        }),
        h("a", { class: "button", href: routeWithQuery("#/invoke",
          { endpoint: endpointName, deployment: name }) }, "Invoke"))),
    deployment.description ? h("p", { class: "description" }, deployment.description) : null,
    tagList(deployment.tags),
    h("div", { class: "columns" },
      h("section", { class: "card" }, h("h2", {}, "Settings"), settingsFacts(deployment.settings)),
      h("section", { class: "card" }, h("h2", {}, "Assets"),
        table(["Asset", "Name", "Version", "Files", "Size", "Digest"], [
          assetRow("model", deployment.model),
          deployment.code_configuration ? assetRow("code", deployment.code_configuration.code)
            : null,
        ].filter(Boolean), { class: "assets" }),
        facts([["Scoring script", deployment.code_configuration
          ? deployment.code_configuration.scoring_script
          : "none: the built-in MLflow scorer scores this MLflow model"],
          ["Created", when(deployment.created_at)], ["Updated", when(deployment.updated_at)]]),
        h("h3", {}, "Environment variables"),
        variables.length
          ? table(["Name", "Value"], variables.map(([k, v]) => h("tr", {}, h("td", {}, k),
            h("td", {}, v))), { class: "environment" })
          : h("p", { class: "muted" }, "none"))),
    h("section", { class: "card" },
      h("h2", {}, "Jobs", jobs.value.length > rows.length
        ? h("span", { class: "muted" }, ` (newest ${rows.length} of ${jobs.value.length})`) : null),
      rows.length ? jobTable.element : notice("info", "No jobs yet.")));
  if (!rows.length) return;
  const running = await jobTable.refresh(signal);
  if (running) ctx.repeat(() => jobTable.refresh(signal), REFRESH_MS);
}
