// The dashboard's summary: one tile per fleet figure (zones, devices, alarms, readings, devices per tilt state).

import { TILT_STATES, h } from "../../dom.js";

function tiles(summary) {
  return [
    ["Zones", summary.zones, ""],
    ["Devices", summary.devices, ""],
    ["Online", summary.online, ""],
    ["Open alarms", summary.open_alarms, summary.open_alarms > 0 ? "tile-alarm" : "tile-ok"],
    ["Readings (last hour)", summary.readings_last_hour, ""],
    ...TILT_STATES.map((state) => [`${state[0].toUpperCase()}${state.slice(1)}`, summary.states[state], `tile-${state}`]),
  ];
}

/** ``section`` for the page; ``render(summary)`` with GET /api/dashboard/summary's answer. */
export function summarySection() {
  const box = h("div", { class: "tiles", id: "summary" });
  const render = (summary) =>
    box.replaceChildren(
      ...tiles(summary).map(([label, value, cls]) =>
        h("div", { class: `tile ${cls}` }, h("span", { class: "tile-value" }, String(value)), h("span", { class: "tile-label" }, label)),
      ),
    );
  return { section: h("section", { "aria-label": "Summary" }, box), render };
}
