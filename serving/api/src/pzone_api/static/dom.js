// Building the page: h() makes elements, show() fills <main>, and the small pieces every view shares (formatters,
// the state pill, notices, the toast). Every value from the API goes in as text, never as HTML.

import { ApiError } from "./api.js";

// The tilt classes (pzone.tilt.TiltState), each with its pill and dot colour in app.css. The UI's one spelling of
// them: tests/api/test_ui_static.py checks it against the Python definition and that no other script repeats it.
export const TILT_STATES = ["upright", "tilted", "fallen"];
// A photo's verdict before the model has answered; it has a pill colour of its own.
const PENDING = "pending";

/** ``h("a", {href: "#/x", class: "y", onclick: f}, "text", child)``: text children become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  appendAll(el, children);
  return el;
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function main() {
  return document.getElementById("main");
}

/** The current page: replaces everything in <main>. */
export function show(...children) {
  const root = main();
  root.replaceChildren(...children.filter(Boolean));
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "—" : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

export function fmtClock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtAgo(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "—";
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function fmtDeg(value) {
  return value === null || value === undefined ? "—" : `${Number(value).toFixed(1)}°`;
}

export function fmtBytes(n) {
  if (!n && n !== 0) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** A coloured pill for a state or verdict (upright, tilted, fallen, pending, unknown). */
export function pill(value, { empty = "—", title } = {}) {
  if (!value) return h("span", { class: "muted" }, empty);
  const known = [...TILT_STATES, PENDING].includes(value) ? value : "other";
  return h("span", { class: `pill pill-${known}`, title }, value);
}

export function notice(kind, text, ...extra) {
  return h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, text, ...extra);
}

/** What to tell the user about a failed request: the API's own reason, or a generic line. */
export function errorText(error) {
  if (error instanceof ApiError) return error.message;
  return "Something went wrong. Please try again.";
}

export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    el.hidden = true;
  }, 3500);
}
