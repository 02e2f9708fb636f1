// The throughput chart: files (or rows) per second over the job's run, drawn as SVG.
//
// The API gives cumulative counts at the times progress was checked; the rate of an
// interval is the difference of its two counts over its length. Intervals shorter than
// 1/60 of the run are merged, so a burst of quick checks does not draw spikes.

import { h, svg } from "./dom.js";
import { seconds } from "./format.js";

const WIDTH = 640;
const HEIGHT = 200;
const PAD = { left: 48, right: 12, top: 12, bottom: 28 };
const MAX_POINTS = 60;

/** [{t (s since start), ok, failed}] rates per interval, from the API's samples. */
export function rates(throughput) {
  const start = Date.parse(throughput.planned_at || "") ||
    (throughput.samples.length ? Date.parse(throughput.samples[0].at) : 0);
  const points = [{ t: 0, ok: 0, failed: 0 }];
  // Nothing finished before the first completion: the first sample's counts were reached
  // after it (workers starting, models loading is the flat start).
  const first = (Date.parse(throughput.first_completed_at || "") - start) / 1000;
  if (throughput.samples.length && first > 0) {
    const firstSample = (Date.parse(throughput.samples[0].at) - start) / 1000;
    points.push({ t: Math.max(0, Math.min(first, firstSample - 1)), ok: 0, failed: 0 });
  }
  for (const sample of throughput.samples) {
    const t = Math.max(0, (Date.parse(sample.at) - start) / 1000);
    points.push({ t, ok: sample.succeeded, failed: sample.failed });
  }
  const span = points[points.length - 1].t;
  const step = span / MAX_POINTS;
  const merged = [points[0]];
  for (let i = 1; i < points.length; i += 1) {
    const last = i === points.length - 1;
    if (last || points[i].t - merged[merged.length - 1].t >= step) merged.push(points[i]);
  }
  const result = [];
  for (let i = 1; i < merged.length; i += 1) {
    const length = Math.max(merged[i].t - merged[i - 1].t, 0.001);
    result.push({
      from: merged[i - 1].t,
      t: merged[i].t,
      ok: (merged[i].ok - merged[i - 1].ok) / length,
      failed: (merged[i].failed - merged[i - 1].failed) / length,
    });
  }
  return result;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 2.5, 5, 10]) {
    if (factor * power >= value) return factor * power;
  }
  return 10 * power;
}

function stepPath(series, key, x, y) {
  let d = "";
  for (const point of series) {
    d += `${d ? "L" : "M"}${x(point.from).toFixed(1)},${y(point[key]).toFixed(1)}`;
    d += `L${x(point.t).toFixed(1)},${y(point[key]).toFixed(1)}`;
  }
  return d;
}

/** The chart for a job's throughput, or a line saying there is nothing to draw yet. */
export function throughputChart(throughput) {
  const series = rates(throughput);
  if (!series.length) {
    return h("p", { class: "muted" }, "No mini-batch has finished yet.");
  }
  const span = Math.max(series[series.length - 1].t, 1);
  const top = niceMax(Math.max(...series.map((p) => p.ok + p.failed)));
  const x = (t) => PAD.left + ((WIDTH - PAD.left - PAD.right) * t) / span;
  const y = (v) => HEIGHT - PAD.bottom - ((HEIGHT - PAD.top - PAD.bottom) * v) / top;
  const anyFailed = series.some((p) => p.failed > 0);
  const unit = throughput.unit || "files";
  const grid = [0, 0.5, 1].map((share) => {
    const value = top * share;
    return [
      svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis" },
        Number.isInteger(value) ? String(value) : value.toFixed(1)),
    ];
  });
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img",
    "aria-label": `${unit} per second over time`,
  },
  svg("title", {}, `${unit[0].toUpperCase()}${unit.slice(1)} per second over time`),
  grid,
  svg("path", { d: stepPath(series, "ok", x, y), class: "line-ok" }),
  anyFailed ? svg("path", { d: stepPath(series, "failed", x, y), class: "line-failed" }) : null,
  svg("text", { x: PAD.left, y: HEIGHT - 8, class: "axis" }, "0 s"),
  svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 8, "text-anchor": "end", class: "axis" },
    seconds(span)),
  svg("text", { x: (PAD.left + WIDTH - PAD.right) / 2, y: HEIGHT - 8, "text-anchor": "middle",
    class: "axis" }, "time since planning"));
  return h("figure", { class: "chart-box" }, chart,
    h("figcaption", {}, h("span", { class: "key key-ok" }, `${unit}/s succeeded`),
      anyFailed ? h("span", { class: "key key-failed" }, `${unit}/s failed`) : null));
}
