// The dashboard's open alarms: one line per alarm; choosing one shows its device's tilt.

import { fmtAgo, fmtDeg, fmtTime, h, pill } from "../../dom.js";

function alarmItem(a, onSelect) {
  return h(
    "li",
    { class: "alarm", dataset: { alarmId: a.id } },
    h(
      "button",
      { type: "button", class: "alarm-button", onclick: () => onSelect(a.device_id), "aria-label": `Show the tilt of ${a.device_id}` },
      h("span", { class: "alarm-head" }, h("strong", {}, a.device_id), " · ", a.zone_id, " ", pill(a.kind)),
      h("span", { class: "alarm-meta" }, `Opened ${fmtTime(a.opened_at)} (${fmtAgo(a.opened_at)}) at ${fmtDeg(a.opened_tilt_deg)}`),
    ),
  );
}

/** ``card`` for the page; ``render(alarms)`` with GET /api/dashboard/alarms?open=true's answer. */
export function alarmsSection(onSelect) {
  const box = h("div", { id: "alarms" });
  function render(alarms) {
    if (!alarms.length) {
      box.replaceChildren(h("p", { class: "empty empty-ok" }, "No open alarms. All scooters are standing."));
      return;
    }
    box.replaceChildren(h("ul", { class: "alarm-list" }, alarms.map((a) => alarmItem(a, onSelect))));
  }
  const card = h(
    "section",
    { class: "card alarms-card", "aria-labelledby": "alarms-title" },
    h("h2", { id: "alarms-title" }, "Open alarms"),
    box,
  );
  return { card, render };
}
