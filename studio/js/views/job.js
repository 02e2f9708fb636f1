// One job, live: status, progress, rate, ETA, throughput chart, per-file errors with their
// tracebacks, attempt logs, lifecycle events, usage and cost, the output folder's files to
// download; cancel and rerun.

import { api, apiPath, apiText, download } from "../api.js";
import { actionButton, facts, h, notice, replace, route, routeWithQuery, table } from "../dom.js";
import { throughputChart } from "../chart.js";
import { bytes, count, duration, inputs, isTerminal, money, progressBar, seconds, statusBadge,
  when } from "../format.js";

const REFRESH_MS = 1000;
const LOGS_EVERY = 5; // refreshes between two reads of the log list while the job runs
const ERRORS_SHOWN = 200;
const LOG_TAIL_BYTES = 256 * 1024;
const FRAME = /File "([^"]*)", line (\d+),? in (.+)$/;
const END_EVENTS = new Set(["completed", "failed", "canceled", "expired"]
  .map((kind) => `batchfn.job.${kind}`));
const REFRESHES_AFTER_END = 10; // while the event that ends the job is still being recorded

/** "score.py:18 in run": the innermost frame of a traceback excerpt. */
export function failedAt(traceback) {
  const frames = String(traceback || "").split("\n").map((line) => FRAME.exec(line))
    .filter(Boolean);
  if (!frames.length) return "";
  const [, file, line, func] = frames[frames.length - 1];
  return `${file.split("/").pop()}:${line} in ${func}`;
}

/** Failed inputs so far: files, or rows of a tabular job. */
function failedInputs(job) {
  const { counts } = inputs(job.progress);
  return counts ? counts.failed : 0;
}

/** Inputs never started (the job was canceled or its deadline passed first). */
function notStartedInputs(job) {
  const { counts } = inputs(job.progress);
  return counts ? counts.not_started || 0 : 0;
}

/** "files" or "rows": what the job's mini-batches are made of. */
function unitOf(job) {
  if (job.progress) return inputs(job.progress).unit;
  return job.settings.input_format && job.settings.input_format !== "files" ? "rows" : "files";
}

function capitalized(text) {
  return text[0].toUpperCase() + text.slice(1);
}

/** "7" for one row, "7–9" for several, "" for a whole file. */
function rowsText(error) {
  if (error.row === null || error.row === undefined) return "";
  const rows = error.rows || 1;
  return rows > 1 ? `${error.row}–${error.row + rows - 1}` : String(error.row);
}

function logPath(jobName, logName) {
  return `${apiPath("jobs", jobName, "logs")}/${logName.split("/").map(encodeURIComponent).join("/")}`;
}

function summary(job) {
  const settings = job.settings;
  return facts([
    ["Endpoint", h("a", { href: routeWithQuery("#/jobs", { endpoint: job.endpoint_name }) },
      job.endpoint_name)],
    ["Deployment", h("a", { href: route("endpoints", job.endpoint_name, "deployments",
      job.deployment_name) }, job.deployment_name)],
    ["Input", `${job.input.uri} (${job.input.type}${job.input.include_subfolders
      ? ", with sub-folders" : ""})`],
    ["Data asset", job.input.data_asset || null],
    ["Compute", job.compute ? `${job.compute.name}${job.compute.max_instances
      ? ` (at most ${job.compute.max_instances} scoring hosts at once)` : ""}` : null],
    ["Output", `${job.output.score.container}/${job.output.score.path}`
      + (job.partial ? " (partial: the mini-batches scored before the job stopped)" : "")],
    ["Rerun of", job.rerun_of ? h("a", { href: route("jobs", job.rerun_of) }, job.rerun_of) : null],
    ["Created", when(job.created_at)],
    ["Started", when(job.started_at)],
    ["Ended", when(job.ended_at)],
    ["Duration", job.started_at ? duration(job.started_at, job.ended_at) : null],
    ["Deadline", job.deadline_at ? when(job.deadline_at) : null],
    ["Input format", settings.input_format && settings.input_format !== "files"
      ? `${settings.input_format}: mini-batches of rows`
        + (settings.passthrough_columns && settings.passthrough_columns.length
          ? `, passthrough columns ${settings.passthrough_columns.join(", ")}` : "")
      : null],
    ["Settings", `mini-batch size ${settings.mini_batch_size} ${unitOf(job)}, max retries `
      + `${settings.retry_settings.max_retries}, timeout ${settings.retry_settings.timeout} s, `
      + `error threshold ${settings.error_threshold}, output ${settings.output_format}`],
    ["Warnings", job.warnings && job.warnings.length ? job.warnings.join("; ") : null],
  ]);
}

function progressSection(job) {
  const progress = job.progress;
  if (!progress) {
    return h("p", { class: "muted" }, isTerminal(job.status)
      ? "The job ended before its input was planned." : "Listing the input files…");
  }
  const { counts, unit } = inputs(progress);
  const row = (label, part) => h("tr", {}, h("th", {}, label),
    ["total", "succeeded", "failed", "not_started", "pending"].map((key) =>
      h("td", { class: `num ${key}` }, count(part[key]))));
  return [
    h("div", { class: "big-progress" }, progressBar(progress, job.status)),
    table(["", "Total", "Succeeded", "Failed", "Not started", "Pending"],
      [row(capitalized(unit), counts), row("Mini-batches", progress.mini_batches)],
      { class: "counts" }),
    facts([
      ["Rate", `${progress.rate_per_second ?? progress.rate_files_per_second} ${unit}/s`],
      ["ETA", isTerminal(job.status) ? null
        : progress.eta_seconds === null ? "unknown" : seconds(progress.eta_seconds)],
      ["Rows written", count(progress.rows)],
    ]),
  ];
}

function usageSection(usage) {
  const cost = usage.cost;
  const gpus = Object.entries(usage.gpu_seconds.by_device)
    .map(([device, secs]) => `${device}: ${secs} s`).join(", ");
  const operations = usage.storage_operations.map((entry) => h("tr", {},
    h("td", {}, entry.kind), h("td", {}, entry.class), h("td", { class: "num" }, count(entry.count)),
    h("td", { class: entry.counted }, entry.counted), h("td", { class: "message" }, entry.how)));
  return [
    usage.final ? null : notice("info", "The job is still running: the usage so far."),
    facts([
      ["Wall time", seconds(usage.wall_seconds)],
      ["Queue wait", usage.queue_wait_seconds === null ? null : seconds(usage.queue_wait_seconds)],
      ["Scoring time", `${usage.scoring_seconds} s of run() over all workers`],
      ["GPU time", usage.gpu_seconds.total ? `${usage.gpu_seconds.total} s (${gpus})` : "none"],
      ["Inputs read", `${count(usage.inputs.scored)} ${usage.unit}, ${bytes(usage.input_bytes)}`],
      ["Rows written", count(usage.rows_written)],
      ["Attempts", `${count(usage.attempts)} (${count(usage.retries)} retries)`],
      ["Estimated cost", h("span", { class: "cost" }, money(cost.total, cost.currency),
        ` at ${cost.prices} list prices of ${cost.prices_as_of}`)],
      ["Cost items", Object.entries(cost.items)
        .map(([item, amount]) => `${item.replaceAll("_", " ")} ${money(amount, cost.currency)}`)
        .join(" · ")],
    ]),
    h("details", { class: "operations" }, h("summary", {}, "Storage operations"),
      table(["Kind", "Class", "Count", "", "How"], operations, { class: "usage-operations" })),
  ];
}

function eventsSection(events) {
  if (!events.length) return h("p", { class: "muted" }, "No events yet.");
  const rows = events.map((event) => h("tr", { "data-event": event.id },
    h("td", {}, when(event.time)), h("td", { class: "type" }, event.type),
    h("td", {}, event.data.status), h("td", { class: "message" }, event.id)));
  return table(["Time", "Type", "Status", "Id"], rows, { class: "events" });
}

function outputPath(jobName, filePath) {
  return `${apiPath("jobs", jobName, "outputs", "score", "files")}/`
    + filePath.split("/").map(encodeURIComponent).join("/");
}

/** The `score` output folder, as Azure ML has it: the merged file where there is one and
 * every file the scoring script wrote to AZUREML_BI_OUTPUT_PATH, each to download. */
function outputsSection(jobName, listing) {
  if (!listing.value.length) {
    return h("p", { class: "muted" }, "The job's output folder holds no file.");
  }
  const rows = listing.value.map((file) => h("tr", { "data-output": file.path },
    h("td", { class: "file" }, file.path, file.main ? " (merged output)" : ""),
    h("td", { class: "num" }, bytes(file.size)),
    h("td", {}, actionButton("Download", () => download(outputPath(jobName, file.path),
      file.path.split("/").pop()), { class: "small" }))));
  return [
    table(["File", "Size", ""], rows, { class: "outputs" }),
    listing.truncated ? h("p", { class: "muted" }, "More files exist than are listed.") : null,
  ];
}

function errorsSection(job, errors) {
  if (!errors.length) {
    return h("p", { class: "muted" }, failedInputs(job) ? "Reading the failure records…"
      : `No failed ${unitOf(job)}.`);
  }
  const tabular = unitOf(job) === "rows";
  const rows = errors.slice(0, ERRORS_SHOWN).map((error) => [
    h("tr", { class: "error-row" },
      h("td", { class: "file" }, error.file),
      tabular ? h("td", { class: "num row" }, rowsText(error)) : null,
      h("td", { class: "num" }, String(error.mini_batch)),
      h("td", { class: "num" }, String(error.attempts)),
      h("td", {}, error.status),
      h("td", { class: "message" }, error.error || "")),
    h("tr", { class: "traceback-row" }, h("td", { colspan: tabular ? 6 : 5 },
      error.traceback
        ? h("details", { class: "traceback" },
          h("summary", {}, "Traceback", failedAt(error.traceback)
            ? ` · failed at ${failedAt(error.traceback)}` : ""),
          h("pre", {}, error.traceback))
        : h("span", { class: "muted" }, error.status === "not_started"
          ? "never started: rerun the failed files to score it"
          : "no traceback: see the attempt logs"))),
  ]);
  return [
    isTerminal(job.status) ? null
      : notice("info", "The job is still running: these are the failures so far."),
    table(["File", tabular ? "Row" : null, "Mini-batch", "Attempts", "Status", "Error"]
      .filter(Boolean), rows, { class: "errors" }),
    !tabular && failedInputs(job) > errors.length
      ? h("p", { class: "muted" }, `The first ${errors.length} of ${count(failedInputs(job))} `
        + "failed files: download errors.jsonl for all of them.") : null,
    tabular && errors.length >= ERRORS_SHOWN
      ? h("p", { class: "muted" }, `The first ${errors.length} failures: download `
        + "errors.jsonl for all of them.") : null,
  ];
}

export async function jobView(ctx, [name]) {
  const { signal } = ctx;
  const parts = {
    head: h("div", { class: "page-head" }),
    reason: h("div"),
    summary: h("section", { class: "card" }),
    progress: h("section", { class: "card", id: "progress" }),
    chart: h("section", { class: "card", id: "throughput" }),
    errors: h("section", { class: "card", id: "errors" }),
    usage: h("section", { class: "card", id: "usage" }),
    events: h("section", { class: "card", id: "events" }),
    outputs: h("section", { class: "card", id: "outputs" }),
    logs: h("section", { class: "card", id: "logs" }),
  };
  const viewer = h("div", { class: "log-viewer" });
  const state = { job: null, errorsFor: null, headFor: null, throughputFor: null, refreshes: 0,
    confirmingCancel: false, eventsFor: null, eventsEnded: false, afterEnd: 0,
    outputsRead: false };
  const headKey = (job) => `${job.status}:${failedInputs(job)}:${state.confirmingCancel}`;
  // The heading is drawn again only when it changes: a button about to be clicked stays put.
  const drawHead = (job) => {
    state.job = job;
    state.headFor = headKey(job);
    replace(parts.head, ...heading(job));
    parts.head.dataset.status = job.status;
  };

  const heading = (job) => {
    const actions = h("div", { class: "actions" });
    const terminal = isTerminal(job.status);
    const failed = failedInputs(job);
    if (!terminal && job.status !== "CancelRequested") {
      if (state.confirmingCancel) {
        actions.append(h("span", {}, "Cancel this job?"),
          actionButton("Yes, cancel it", async () => {
            state.confirmingCancel = false;
            await api("POST", apiPath("jobs", name, "cancel"));
            await refresh();
          }, { class: "danger", id: "confirm-cancel" }),
          actionButton("No", async () => {
            state.confirmingCancel = false;
            drawHead(state.job);
          }));
      } else {
        actions.append(actionButton("Cancel job", async () => {
          state.confirmingCancel = true;
          drawHead(state.job);
        }, { id: "cancel-job" }));
      }
    }
    if (terminal) {
      const rerun = async (failedOnly) => {
        const created = await api("POST", apiPath("jobs", name, "rerun"),
          { body: { failed_only: failedOnly } });
        location.hash = route("jobs", created.name);
      };
      if (failed || notStartedInputs(job)) {
        actions.append(actionButton(notStartedInputs(job) ? "Rerun failed and not started"
          : "Rerun failed files", () => rerun(true), { id: "rerun-failed" }));
      }
      actions.append(actionButton("Rerun", () => rerun(false), { id: "rerun-all" }));
      if ((job.status === "Completed" || job.partial)
          && job.settings.output_action === "append_row") {
        actions.append(actionButton(`Download ${job.settings.output_file_name}`,
          () => download(apiPath("jobs", name, "outputs", "score"), job.settings.output_file_name),
          { id: "download-score" }));
      }
      actions.append(actionButton("Download errors.jsonl",
        () => download(apiPath("jobs", name, "outputs", "errors"), "errors.jsonl"),
        { id: "download-errors" }));
    }
    return [h("h1", {}, job.name, " ", statusBadge(job.status)), actions];
  };

  const showLog = async (entry) => {
    replace(viewer, h("p", { class: "muted" }, `Loading ${entry.name}…`));
    const { text, size } = await apiText(logPath(name, entry.name),
      { query: { tail: LOG_TAIL_BYTES }, signal });
    replace(viewer,
      h("h3", {}, entry.name),
      size > LOG_TAIL_BYTES ? h("p", { class: "muted" },
        `The last ${bytes(LOG_TAIL_BYTES)} of ${bytes(size)}: download it for the whole log.`)
        : null,
      h("pre", { class: "log" }, text || "(empty)"));
  };

  const logsSection = (logs) => {
    if (!logs.value.length) {
      return h("p", { class: "muted" }, "No attempt logs yet (a succeeded attempt writes one only "
        + "when its script printed something).");
    }
    const rows = logs.value.map((entry) => h("tr", { "data-log": entry.name },
      h("td", {}, entry.kind === "failed_attempt"
        ? `mini-batch ${entry.mini_batch}, attempt ${entry.attempt} (failed)`
        : `succeeded attempts: ${entry.name}`),
      h("td", { class: "num" }, bytes(entry.size)),
      h("td", {}, when(entry.last_modified)),
      h("td", {},
        actionButton("View", () => showLog(entry), { class: "small" }), " ",
        actionButton("Download", () => download(logPath(name, entry.name),
          entry.name.replace("/", "-")), { class: "small" }))));
    return [
      table(["Log", "Size", "Modified", ""], rows, { class: "logs" }),
      logs.truncated ? h("p", { class: "muted" }, "More logs exist than are listed.") : null,
      viewer,
    ];
  };

  const refresh = async () => {
    const job = await api("GET", apiPath("jobs", name), { signal });
    const terminal = isTerminal(job.status);
    const failed = failedInputs(job);
    const errorsKey = `${failed}:${terminal}`;
    const readLogs = state.refreshes % LOGS_EVERY === 0 || terminal || errorsKey !== state.errorsFor;
    // The series only grows when inputs finish.
    const { counts } = inputs(job.progress);
    const throughputKey = `${counts ? counts.succeeded + counts.failed : -1}:${terminal}`;
    const eventsKey = `${job.status}:${counts ? counts.succeeded + counts.failed : -1}`;
    const readEvents = terminal ? !state.eventsEnded : eventsKey !== state.eventsFor
      && (state.refreshes % LOGS_EVERY === 0 || state.eventsFor === null);
    const [throughput, errors, logs, events, usage, outputs] = await Promise.all([
      throughputKey !== state.throughputFor
        ? api("GET", apiPath("jobs", name, "throughput"), { signal }) : null,
      errorsKey !== state.errorsFor && (failed || terminal)
        ? api("GET", apiPath("jobs", name, "errors"), { query: { top: ERRORS_SHOWN }, signal })
        : null,
      readLogs ? api("GET", apiPath("jobs", name, "logs"), { signal }) : null,
      readEvents ? api("GET", apiPath("jobs", name, "events"), { signal }) : null,
      readEvents ? api("GET", apiPath("jobs", name, "usage"), { signal }) : null,
      // The folder is complete once the job has ended: read it then, once.
      terminal && !state.outputsRead
        ? api("GET", apiPath("jobs", name, "outputs", "score", "files"), { signal }) : null,
    ]);
    state.refreshes += 1;
    if (signal.aborted) return false;
    if (headKey(job) !== state.headFor) drawHead(job);
    replace(parts.reason, job.reason
      ? notice(job.status === "Failed" ? "error" : "info", job.reason) : null);
    replace(parts.summary, h("h2", {}, "Job"), summary(job));
    replace(parts.progress, h("h2", {}, "Progress"), progressSection(job));
    if (throughput) {
      state.throughputFor = throughputKey;
      replace(parts.chart, h("h2", {}, "Throughput"), throughputChart(throughput));
    }
    if (errors) {
      state.errorsFor = errorsKey;
      replace(parts.errors, h("h2", {}, `Failed ${unitOf(job)}`), errorsSection(job, errors.value));
    } else if (!state.errorsFor) {
      replace(parts.errors, h("h2", {}, `Failed ${unitOf(job)}`), errorsSection(job, []));
    }
    if (logs) replace(parts.logs, h("h2", {}, "Attempt logs"), logsSection(logs));
    if (events) {
      state.eventsFor = eventsKey;
      state.eventsEnded = events.value.some((event) => END_EVENTS.has(event.type));
      replace(parts.events, h("h2", {}, "Lifecycle events"), eventsSection(events.value));
      replace(parts.usage, h("h2", {}, "Usage and cost"), usageSection(usage));
    }
    if (outputs) {
      state.outputsRead = true;
      replace(parts.outputs, h("h2", {}, "Output folder (score)"), outputsSection(name, outputs));
    }
    if (terminal) state.afterEnd += 1;
    return !terminal || (!state.eventsEnded && state.afterEnd < REFRESHES_AFTER_END);
  };

  const running = await refresh();
  ctx.show(parts.head, parts.reason, parts.summary, parts.progress, parts.chart, parts.errors,
    parts.usage, parts.events, parts.outputs, parts.logs);
  if (running) ctx.repeat(refresh, REFRESH_MS);
}
