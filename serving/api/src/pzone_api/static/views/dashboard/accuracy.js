// The dashboard's live accuracy: the model's verdicts checked against the measured state, one line per model
// version over a window the operator picks, and a table of the same figures.

import { accuracyChart, seriesColor } from "../../chart.js";
import { h } from "../../dom.js";

// The chart's windows and the bucket of each point (GET /api/accuracy?window=&bucket=).
const ACCURACY_WINDOWS = [
  { window: "1h", bucket: "5m", label: "1 h" },
  { window: "6h", bucket: "15m", label: "6 h" },
  { window: "24h", bucket: "1h", label: "24 h" },
  { window: "7d", bucket: "6h", label: "7 days" },
];
const DEFAULT_WINDOW = ACCURACY_WINDOWS[2];
const COLUMNS = ["Model version", "Scored", "Waiting", "Accuracy", "Macro-F1"];

const pct = (value) => (value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)}%`);

function versionRow(v, i) {
  return h(
    "tr",
    { dataset: { modelVersion: v.model_version } },
    h(
      "td",
      { "data-label": "Model version" },
      h("span", { class: "swatch", style: `background: ${seriesColor(i)}`, "aria-hidden": "true" }),
      v.model_version,
    ),
    h("td", { "data-label": "Scored", class: "num" }, String(v.scored)),
    h("td", { "data-label": "Waiting", class: "num" }, String(v.pending_label)),
    h("td", { "data-label": "Accuracy", class: "num" }, pct(v.accuracy)),
    h("td", { "data-label": "Macro-F1", class: "num" }, pct(v.macro_f1)),
  );
}

/** The figures per model version, each row's swatch in its line's colour. */
function versionsTable(versions) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table accuracy-table" },
      h("caption", { class: "visually-hidden" }, "Live accuracy per model version over the window"),
      h("thead", {}, h("tr", {}, COLUMNS.map((l) => h("th", { scope: "col" }, l)))),
      h("tbody", {}, versions.map(versionRow)),
    ),
  );
}

function pendingNote(report) {
  if (!(report.pending_label > 0)) return null;
  return h(
    "p",
    { class: "muted" },
    `${report.pending_label} prediction${report.pending_label === 1 ? "" : "s"} waiting for a measured label.`,
  );
}

function windowSelect(current) {
  return h(
    "select",
    { id: "accuracy-window", "aria-label": "Accuracy window" },
    ACCURACY_WINDOWS.map((w) => h("option", { value: w.window, selected: w === current }, `${w.label} (per ${w.bucket})`)),
  );
}

function metricSelect() {
  return h(
    "select",
    { id: "accuracy-metric", "aria-label": "Accuracy metric" },
    h("option", { value: "accuracy", selected: true }, "Accuracy"),
    h("option", { value: "macro_f1" }, "Macro-F1"),
  );
}

/**
 * ``card`` for the page; ``query()`` the window and bucket to ask GET /api/accuracy for, ``render(report)`` with its
 * answer, ``draw()`` draws the last report again (at the box's new width). Another window calls ``onWindowChange()``;
 * another metric only redraws.
 */
export function accuracySection(onWindowChange) {
  let current = DEFAULT_WINDOW;
  let metric = "accuracy";
  let lastReport = null;
  const box = h("div", { class: "chart-box", id: "accuracy-chart" });
  const legend = h("div", { class: "accuracy-legend", id: "accuracy-legend" });
  const windows = windowSelect(current);
  windows.addEventListener("change", () => {
    current = ACCURACY_WINDOWS.find((w) => w.window === windows.value) || DEFAULT_WINDOW;
    onWindowChange();
  });
  const metrics = metricSelect();
  metrics.addEventListener("change", () => {
    metric = metrics.value;
    draw();
  });

  function draw() {
    if (!lastReport) return;
    const width = Math.max(300, Math.min(1100, box.clientWidth || 640));
    box.replaceChildren(
      accuracyChart(lastReport.versions, {
        since: lastReport.since,
        until: lastReport.until,
        bucketS: lastReport.bucket_s,
        metric,
        width,
      }),
    );
  }

  function render(report) {
    lastReport = report;
    draw();
    if (!report.versions.length) {
      legend.replaceChildren(h("p", { class: "empty" }, "No predictions in this window yet."));
      return;
    }
    legend.replaceChildren(versionsTable(report.versions), pendingNote(report));
  }

  const card = h(
    "section",
    { class: "card accuracy-card", "aria-labelledby": "accuracy-title" },
    h(
      "div",
      { class: "section-head" },
      h("h2", { id: "accuracy-title" }, "Live accuracy"),
      h(
        "div",
        { class: "chart-controls" },
        h("label", { class: "inline-label" }, "Show ", metrics),
        h("label", { class: "inline-label" }, "Window ", windows),
      ),
    ),
    h(
      "p",
      { class: "muted chart-note" },
      "The model's verdicts checked against the state the scooter's sensor measured (or an operator set), one line per model version.",
    ),
    box,
    legend,
  );
  return { card, render, draw, query: () => ({ window: current.window, bucket: current.bucket }) };
}
