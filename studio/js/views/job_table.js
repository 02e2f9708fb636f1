// A table of jobs with a live progress bar each (the jobs list and a deployment's jobs).

import { api, apiPath } from "../api.js";
import { h, replace, route, table } from "../dom.js";
import { count, inputs, isTerminal, progressBar, statusBadge, when } from "../format.js";

const PARALLEL_READS = 4;

/** Run `work` on every item, at most `limit` at a time. */
export async function eachLimited(items, limit, work) {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      await work(item);
    }
  });
  await Promise.all(workers);
}

export class JobTable {
  /** `rows` are the list's summaries (name, status, endpoint_name, deployment_name, created_at). */
  constructor(rows, { showDeployment = true } = {}) {
    this.rows = rows;
    this.status = new Map();
    this.cells = new Map();
    const body = rows.map((row) => {
      const cells = {
        status: h("td", {}, statusBadge(row.status)),
        progress: h("td", { class: "progress-cell" }, h("span", { class: "muted" }, "…")),
        failed: h("td", { class: "num" }, ""),
      };
      this.cells.set(row.name, cells);
      this.status.set(row.name, { status: row.status, loaded: false });
      return h("tr", { "data-job": row.name },
        h("td", {}, h("a", { href: route("jobs", row.name) }, row.name)),
        cells.status,
        showDeployment ? h("td", {}, row.endpoint_name) : null,
        h("td", {}, row.deployment_name),
        h("td", {}, when(row.created_at)),
        cells.progress,
        cells.failed);
    });
    const headers = ["Job", "Status", showDeployment ? "Endpoint" : null, "Deployment", "Created",
      "Progress", "Failed"].filter(Boolean);
    this.element = table(headers, body, { class: "jobs" });
  }

  /** Fetch progress for the rows not finished (or never loaded); true if any still runs. */
  async refresh(signal) {
    const pending = this.rows.filter((row) => {
      const known = this.status.get(row.name);
      return !known.loaded || !isTerminal(known.status);
    });
    await eachLimited(pending, PARALLEL_READS, async (row) => {
      const job = await api("GET", apiPath("jobs", row.name), { signal });
      this.update(job);
    });
    return this.rows.some((row) => !isTerminal(this.status.get(row.name).status));
  }

  update(job) {
    const cells = this.cells.get(job.name);
    if (!cells) return;
    this.status.set(job.name, { status: job.status, loaded: true });
    replace(cells.status, statusBadge(job.status));
    replace(cells.progress, progressBar(job.progress, job.status));
    const { counts, unit } = inputs(job.progress);
    replace(cells.failed, counts ? `${count(counts.failed)}${unit === "rows" ? " rows" : ""}` : "");
  }
}
