// The dashboard's tilt chart: the chosen device's tilt over a time window the operator picks.

import { api } from "../../api.js";
import { tiltChart } from "../../chart.js";
import { TILT_STATES, h } from "../../dom.js";

const TILT_WINDOWS = [15, 60, 360, 1440]; // minutes

/** A coloured dot and the name of each tilt state: "● upright ● tilted ● fallen". */
function legend() {
  const last = TILT_STATES.length - 1;
  return h(
    "p",
    { class: "legend", "aria-hidden": "true" },
    TILT_STATES.map((state, i) => [h("span", { class: `dot dot-${state}` }), i < last ? `${state} ` : state]),
  );
}

/**
 * ``card`` for the page; ``fetchSeries(deviceId, signal)`` asks for a device's tilt over the chosen window,
 * ``showSeries(series)`` draws it, ``clear()`` asks the operator to choose a device, ``draw()`` draws the last series
 * again (at the box's new width). Another window calls ``onWindowChange()``.
 */
export function tiltChartSection(onWindowChange) {
  let minutes = 60;
  let lastSeries = null;
  const title = h("h2", { id: "chart-title" }, "Tilt");
  const box = h("div", { class: "chart-box", id: "tilt-chart" });
  const windowSelect = h(
    "select",
    { id: "tilt-window", "aria-label": "Time window" },
    TILT_WINDOWS.map((m) => h("option", { value: m, selected: m === minutes }, m < 60 ? `${m} min` : `${m / 60} h`)),
  );
  windowSelect.addEventListener("change", () => {
    minutes = Number(windowSelect.value);
    onWindowChange();
  });

  function draw() {
    if (!lastSeries) return;
    const { series, minutes: span } = lastSeries;
    title.textContent = `Tilt of ${series.device_id}`;
    // Drawn at the box's own width so that the labels keep their size on a phone.
    const width = Math.max(300, Math.min(1100, box.clientWidth || 640));
    box.replaceChildren(tiltChart(series.points, { minutes: span, deviceId: series.device_id, width }));
  }

  const card = h(
    "section",
    { class: "card chart-card", "aria-labelledby": "chart-title" },
    h("div", { class: "section-head" }, title, h("label", { class: "inline-label" }, "Window ", windowSelect)),
    box,
    legend(),
  );
  return {
    card,
    draw,
    fetchSeries: (deviceId, signal) =>
      api(`/api/dashboard/devices/${encodeURIComponent(deviceId)}/tilt`, { query: { minutes }, signal }),
    showSeries(series) {
      lastSeries = { series, minutes };
      draw();
    },
    clear() {
      lastSeries = null;
      title.textContent = "Tilt";
      box.replaceChildren(h("p", { class: "empty" }, "Choose a device to see its tilt."));
    },
  };
}
