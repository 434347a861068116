// The dashboard's device table: each device's last state, tilt, battery and alarm; choosing one shows its tilt.

import { fmtAgo, fmtDeg, fmtTime, h, pill } from "../../dom.js";

const COLUMNS = ["Device", "Zone", "State", "Tilt", "Battery", "Status", "Last reading", "Alarm"];

function deviceRow(d, selected, onSelect) {
  const row = h(
    "tr",
    { class: `${d.id === selected ? "is-selected " : ""}${d.open_alarm ? "has-alarm" : ""}`, dataset: { deviceId: d.id } },
    h(
      "td",
      { "data-label": "Device" },
      h(
        "button",
        {
          type: "button",
          class: "link-button",
          "aria-pressed": d.id === selected ? "true" : "false",
          dataset: { deviceId: d.id },
          onclick: () => onSelect(d.id),
        },
        d.id,
      ),
    ),
    h("td", { "data-label": "Zone" }, d.zone_id),
    h("td", { "data-label": "State" }, pill(d.last_state, { empty: "no data" })),
    h("td", { "data-label": "Tilt", class: "num" }, fmtDeg(d.last_tilt_deg)),
    h("td", { "data-label": "Battery", class: "num" }, d.battery === null || d.battery === undefined ? "—" : `${Math.round(d.battery)}%`),
    h(
      "td",
      { "data-label": "Status" },
      h("span", { class: `status status-${d.status || "unknown"}` }, d.status || "unknown"),
    ),
    h("td", { "data-label": "Last reading" }, h("time", { datetime: d.last_measured_at || "", title: fmtTime(d.last_measured_at) }, fmtAgo(d.last_measured_at))),
    h(
      "td",
      { "data-label": "Alarm" },
      d.open_alarm
        ? h("span", { class: "alarm-flag", title: `Opened ${fmtTime(d.open_alarm.opened_at)}` }, `open · ${fmtAgo(d.open_alarm.opened_at)}`)
        : h("span", { class: "muted" }, "—"),
    ),
  );
  row.addEventListener("click", (event) => {
    if (!(event.target instanceof HTMLButtonElement)) onSelect(d.id);
  });
  return row;
}

function devicesTable(devices, selected, onSelect) {
  return h(
    "table",
    { class: "table devices-table" },
    h("caption", { class: "visually-hidden" }, "Devices; choose one to see its tilt chart"),
    h("thead", {}, h("tr", {}, COLUMNS.map((l) => h("th", { scope: "col" }, l)))),
    h(
      "tbody",
      {},
      devices.map((d) => deviceRow(d, selected, onSelect)),
    ),
  );
}

/**
 * ``card`` for the page; ``render(devices, selected)`` with GET /api/dashboard/devices's answer and the chosen
 * device's id; ``reselect(selected)`` marks another device in the devices last rendered. A click on a device calls
 * ``onSelect(id)``.
 */
export function devicesSection(onSelect) {
  const box = h("div", { class: "table-wrap", id: "devices" });
  let last = [];
  function render(devices, selected) {
    last = devices;
    if (!devices.length) {
      box.replaceChildren(h("p", { class: "empty" }, "No devices have reported yet."));
      return;
    }
    // The table is drawn anew on every refresh: the device button that had the focus gets it back.
    const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.deviceId : null;
    box.replaceChildren(devicesTable(devices, selected, onSelect));
    if (focusedId) {
      const again = box.querySelector(`button[data-device-id="${CSS.escape(focusedId)}"]`);
      if (again) again.focus({ preventScroll: true });
    }
  }
  const card = h(
    "section",
    { class: "card devices-card", "aria-labelledby": "devices-title" },
    h("h2", { id: "devices-title" }, "Devices"),
    box,
  );
  return { card, render, reselect: (selected) => render(last, selected) };
}
