// Invoke an endpoint: input, deployment, per-job settings; then watch the new job.

import { ApiError, api, apiPath } from "../api.js";
import { h, notice, replace, route, routeWithQuery } from "../dom.js";

// Per-job settings of the invoke body: [field, label, input type, hint].
const SETTINGS = [
  ["mini_batch_size", "Mini-batch size (files, or rows of a tabular input)", "number",
    "deployment's"],
  ["instance_count", "Instance count", "number", "deployment's"],
  ["max_retries", "Max retries", "number", "deployment's"],
  ["timeout", "Timeout per mini-batch (s)", "number", "deployment's"],
  ["error_threshold", "Error threshold (files or rows, -1: none)", "number", "deployment's"],
  ["output_file_name", "Output file name", "text", "deployment's"],
  ["deadline", "Deadline (90s, 30m, 2h, PT2H; no new mini-batch after it)", "text",
    "deployment's"],
];
const OUTPUT_FORMATS = ["azureml", "csv", "jsonl", "parquet"];
const INPUT_FORMATS = ["files", "csv", "jsonl", "parquet"];

function field(name, label, control) {
  return h("div", { class: "field" }, h("label", { for: `invoke-${name}` }, label), control);
}

function input(name, type, props = {}) {
  return h("input", { id: `invoke-${name}`, name, type, autocomplete: "off", ...props });
}

/** The invoke body from the form's values (empty fields left to the deployment). */
export function invokeBody(values) {
  const body = {
    input: {
      uri: values.input.trim(),
      type: values.input_type,
      include_subfolders: values.include_subfolders === "on",
    },
  };
  if (values.deployment) body.deployment_name = values.deployment;
  if (values.name.trim()) body.name = values.name.trim();
  if (values.output_path.trim()) body.output_path = values.output_path.trim();
  if (values.output_format) body.output_format = values.output_format;
  const settings = {};
  if (values.input_format) settings.input_format = values.input_format;
  if ((values.passthrough_columns || "").trim()) {
    settings.passthrough_columns = values.passthrough_columns.trim();
  }
  if (Object.keys(settings).length) body.settings = settings;
  for (const [name, , type] of SETTINGS) {
    const raw = (values[name] || "").trim();
    if (raw) body[name] = type === "number" ? Number(raw) : raw;
  }
  return body;
}

export async function invokeView(ctx, params, query) {
  const { signal } = ctx;
  const endpoints = (await api("GET", "endpoints", { signal })).value;
  if (!endpoints.length) {
    ctx.show(h("h1", {}, "Invoke"), notice("info", "No endpoints yet: create one first."));
    return;
  }
  const chosen = endpoints.find((e) => e.name === query.endpoint) || endpoints[0];
  const deployments = (await api("GET", apiPath("endpoints", chosen.name, "deployments"),
    { signal })).value;
  const defaultName = chosen.defaults && chosen.defaults.deployment_name;
  const result = h("div", { class: "invoke-result" });

  const endpointSelect = h("select", { id: "invoke-endpoint", name: "endpoint" },
    endpoints.map((e) => h("option", { value: e.name, selected: e.name === chosen.name }, e.name)));
  endpointSelect.addEventListener("change", () => {
    location.hash = routeWithQuery("#/invoke", { endpoint: endpointSelect.value });
  });
  const deploymentSelect = h("select", { id: "invoke-deployment", name: "deployment" },
    h("option", { value: "" }, defaultName ? `the default (${defaultName})` : "the default (none set)"),
    deployments.map((d) => h("option", { value: d.name, selected: d.name === query.deployment },
      d.name === defaultName ? `${d.name} (default)` : d.name)));

  const form = h("form", { class: "card invoke", id: "invoke-form" },
    field("endpoint", "Endpoint", endpointSelect),
    field("deployment", "Deployment", deploymentSelect),
    field("input", "Input: a storage URL, azureml://datastores/<name>/paths/<path> or a data "
      + "asset, azureml:<name>@latest",
      input("input", "text", { required: true, spellcheck: "false",
        placeholder: "azureml://datastores/workspaceblobstore/paths/mnist-sample/" })),
    h("div", { class: "field inline" },
      h("label", {}, input("input_type", "radio", { value: "uri_folder", checked: true }),
        " folder"),
      h("label", {}, input("input_type-file", "radio", { value: "uri_file", name: "input_type" }),
        " one file"),
      h("label", {}, input("include_subfolders", "checkbox"), " include sub-folders")),
    field("name", "Job name (optional; the same name never starts a second job)",
      input("name", "text", { pattern: "[A-Za-z0-9][A-Za-z0-9_-]{0,99}" })),
    h("details", { class: "settings" }, h("summary", {}, "Per-job settings"),
      h("div", { class: "grid" },
        SETTINGS.map(([name, label, type, hint]) => field(name, label,
          input(name, type, type === "number" ? { step: "any", placeholder: hint }
            : { placeholder: hint }))),
        field("input_format", "Input format (csv, jsonl, parquet: mini-batches of rows)",
          h("select", { id: "invoke-input_format", name: "input_format" },
            h("option", { value: "" }, "deployment's"),
            INPUT_FORMATS.map((f) => h("option", { value: f }, f)))),
        field("passthrough_columns", "Passthrough columns (tabular: id,region)",
          input("passthrough_columns", "text", { placeholder: "none" })),
        field("output_format", "Output format", h("select", { id: "invoke-output_format",
          name: "output_format" }, h("option", { value: "" }, "deployment's"),
        OUTPUT_FORMATS.map((f) => h("option", { value: f }, f)))),
        field("output_path", "Output folder (URL or azureml:// path)",
          input("output_path", "text", { placeholder: "the job's folder" })))),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "invoke-submit" },
      "Start job")),
    result);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submit = form.querySelector("#invoke-submit");
    submit.disabled = true;
    replace(result);
    try {
      const body = invokeBody(Object.fromEntries(new FormData(form)));
      const job = await api("POST", apiPath("endpoints", endpointSelect.value, "jobs"), { body });
      location.hash = route("jobs", job.name);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(result, notice("error", error.message));
    } finally {
      submit.disabled = false;
    }
  });
  ctx.show(h("div", { class: "page-head" }, h("h1", {}, "Invoke an endpoint")), form);
}
