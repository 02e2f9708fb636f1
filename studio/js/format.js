// How numbers, sizes, times and statuses read on the page.

import { h } from "./dom.js";

export const STATUSES = ["NotStarted", "Queued", "Running", "Finalizing", "Completed", "Failed",
  "CancelRequested", "Canceled", "Expired"];
export const TERMINAL = new Set(["Completed", "Failed", "Canceled", "Expired"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

/** A status badge (its class is one of the fixed status words). */
export function statusBadge(status) {
  const known = STATUSES.includes(status) ? status : "unknown";
  return h("span", { class: `status status-${known}` }, status || "unknown");
}

export function bytes(size) {
  if (size === null || size === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(size);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function count(value) {
  return Number(value || 0).toLocaleString("en-US");
}

export function when(text) {
  if (!text) return "";
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) return String(text);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function seconds(value) {
  if (value === null || value === undefined) return "";
  let rest = Math.round(Number(value));
  if (rest < 60) return `${rest} s`;
  const hours = Math.floor(rest / 3600);
  rest -= hours * 3600;
  const minutes = Math.floor(rest / 60);
  const secs = rest - minutes * 60;
  return hours ? `${hours} h ${minutes} min` : `${minutes} min ${secs} s`;
}

export function duration(start, end) {
  if (!start) return "";
  const from = new Date(start).getTime();
  const to = end ? new Date(end).getTime() : Date.now();
  return seconds(Math.max(0, (to - from) / 1000));
}

/** The job's input counts ({total, succeeded, failed, pending}) and their unit. */
export function inputs(progress) {
  if (!progress) return { counts: null, unit: "files" };
  return { counts: progress.inputs || progress.files || null, unit: progress.unit || "files" };
}

/** Inputs (files, or rows of a tabular job) done as a share of the total, 0..100. */
export function percentDone(progress, status) {
  const { counts } = inputs(progress);
  if (!counts || !counts.total) return status === "Completed" ? 100 : 0;
  return Math.min(100, (100 * (counts.succeeded + counts.failed)) / counts.total);
}

/** A money amount with enough digits to show small costs ("0.000123 USD"). */
export function money(amount, currency) {
  if (amount === null || amount === undefined) return "";
  const value = Number(amount);
  const digits = value !== 0 && Math.abs(value) < 0.01 ? 6 : 4;
  return `${value.toFixed(digits)} ${currency || ""}`.trim();
}

/** A progress bar with its figure beside it. */
export function progressBar(progress, status) {
  const percent = percentDone(progress, status);
  const { counts, unit } = inputs(progress);
  const bar = h("progress", { max: 100, value: percent.toFixed(1), "aria-label": `${unit} done` });
  const label = counts
    ? `${Math.floor(percent)} % · ${count(counts.succeeded + counts.failed)}/${count(counts.total)} ${unit}`
    : status === "Completed" ? "100 %" : "not planned yet";
  return h("span", { class: "progress" }, bar, h("span", { class: "progress-label" }, label));
}
