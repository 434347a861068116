// The operators' dashboard (#/dashboard): the fleet's summary, devices, open alarms, the chosen device's tilt and
// the model's live accuracy, refreshed every few seconds while the tab is shown. Each section is its own module
// under dashboard/; this one lays them out, fetches their data together and keeps the refresh going.

import { api } from "../api.js";
import { errorText, fmtClock, h, notice, show } from "../dom.js";
import { currentUser, handleAuthError } from "../session.js";
import { accuracySection } from "./dashboard/accuracy.js";
import { alarmsSection } from "./dashboard/alarms.js";
import { devicesSection } from "./dashboard/devices.js";
import { summarySection } from "./dashboard/summary.js";
import { tiltChartSection } from "./dashboard/tilt-chart.js";

const DASHBOARD_REFRESH_MS = 5000;

function operatorsOnly() {
  show(h("section", { class: "card" }, h("h1", {}, "Dashboard"), notice("error", "The dashboard is for operators only.")));
  return null;
}

/** The dashboard's sections and what the refresh loop keeps between rounds (``selected``: the charted device). */
function createBoard() {
  const board = { alive: true, timer: null, inFlight: null, resizeTimer: null, selected: null };
  const select = (deviceId) => {
    board.selected = deviceId;
    board.devices.reselect(deviceId);
    refresh(board);
  };
  board.updated = h("span", { class: "live", role: "status", "aria-live": "polite" }, "Loading…");
  board.banner = h("div", { class: "banner-slot" });
  board.summary = summarySection();
  board.devices = devicesSection(select);
  board.alarms = alarmsSection(select);
  board.tilt = tiltChartSection(() => refresh(board));
  board.accuracy = accuracySection(() => refresh(board));
  return board;
}

function layout(board) {
  return h(
    "div",
    { class: "dashboard" },
    h("div", { class: "section-head" }, h("h1", {}, "Fleet dashboard"), board.updated),
    board.banner,
    board.summary.section,
    h("div", { class: "dash-grid" }, board.devices.card, board.alarms.card, board.tilt.card, board.accuracy.card),
  );
}

/** The charted device stays while it is listed; otherwise the first with an open alarm, else the first. */
function keepOrPickSelected(board, devices) {
  if (board.selected && !devices.some((d) => d.id === board.selected)) board.selected = null;
  if (!board.selected && devices.length) {
    const alarmed = devices.find((d) => d.open_alarm);
    board.selected = (alarmed || devices[0]).id;
  }
}

async function renderChart(board, signal) {
  if (!board.selected) {
    board.tilt.clear();
    return;
  }
  const series = await board.tilt.fetchSeries(board.selected, signal);
  if (!board.alive) return;
  board.tilt.showSeries(series);
}

/** One round: every section's data at once, then the chart; the next round is scheduled while the tab is shown. */
async function refresh(board) {
  if (!board.alive) return;
  clearTimeout(board.timer);
  if (board.inFlight) board.inFlight.abort();
  const controller = new AbortController();
  board.inFlight = controller;
  const signal = controller.signal;
  try {
    const [summary, devices, alarms, accuracy] = await Promise.all([
      api("/api/dashboard/summary", { signal }),
      api("/api/dashboard/devices", { signal }),
      api("/api/dashboard/alarms", { query: { open: true }, signal }),
      api("/api/accuracy", { query: board.accuracy.query(), signal }),
    ]);
    if (!board.alive) return;
    keepOrPickSelected(board, devices);
    board.summary.render(summary);
    board.devices.render(devices, board.selected);
    board.alarms.render(alarms);
    board.accuracy.render(accuracy);
    await renderChart(board, signal);
    board.banner.replaceChildren();
    board.updated.textContent = `Updated ${fmtClock(new Date())} · refreshes every ${DASHBOARD_REFRESH_MS / 1000} s`;
  } catch (err) {
    if (err && err.name === "AbortError") return;
    if (handleAuthError(err)) return;
    board.banner.replaceChildren(notice("error", `Could not refresh the dashboard: ${errorText(err)} Retrying…`));
  } finally {
    if (board.inFlight === controller) board.inFlight = null;
    // Paused while the tab is hidden; the visibilitychange handler refreshes when it is shown again.
    if (board.alive && !signal.aborted && !document.hidden) board.timer = setTimeout(() => refresh(board), DASHBOARD_REFRESH_MS);
  }
}

/** Refreshes when the tab is shown again and redraws the charts at a new width; returns the teardown. */
function followPage(board) {
  const onVisibility = () => {
    if (document.visibilityState === "visible") refresh(board);
  };
  const onResize = () => {
    clearTimeout(board.resizeTimer);
    board.resizeTimer = setTimeout(() => {
      board.tilt.draw();
      board.accuracy.draw();
    }, 150);
  };
  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("resize", onResize);
  return () => {
    window.removeEventListener("resize", onResize);
    document.removeEventListener("visibilitychange", onVisibility);
  };
}

export function dashboardView() {
  if (currentUser().role !== "operator") return operatorsOnly();
  const board = createBoard();
  show(layout(board));
  const unfollow = followPage(board);
  refresh(board);
  return () => {
    board.alive = false;
    clearTimeout(board.timer);
    clearTimeout(board.resizeTimer);
    if (board.inFlight) board.inFlight.abort();
    unfollow();
  };
}
