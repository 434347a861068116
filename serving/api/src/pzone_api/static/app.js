// P-ZONE web UI: a small single-page app with hash routes (#/login, #/signup, #/upload, #/history, #/dashboard).
// Plain ES modules, no build step. Every value from the API is put in the page as text, never as HTML.

import { ApiError, api, sendWithProgress, setCsrfToken } from "./api.js";
import { accuracyChart, seriesColor, tiltChart } from "./chart.js";

const DASHBOARD_REFRESH_MS = 5000;
const VERDICT_POLL_MS = 5000;
const VERDICT_POLL_MAX = 24;
// 202 "processing": the photo worker did not answer within the API's wait; ask again (each ask waits too).
const PROCESSING_POLL_MS = 1000;
const PROCESSING_POLL_MAX = 30;
const BATCH_MAX = 20; // photos per batch upload: the API's PZONE_UPLOAD_BATCH_MAX default
const HISTORY_PAGE_SIZE = 10;
const TILT_WINDOWS = [15, 60, 360, 1440];
// The accuracy chart's windows and the bucket of each point (GET /api/accuracy?window=&bucket=).
const ACCURACY_WINDOWS = [
  { window: "1h", bucket: "5m", label: "1 h" },
  { window: "6h", bucket: "15m", label: "6 h" },
  { window: "24h", bucket: "1h", label: "24 h" },
  { window: "7d", bucket: "6h", label: "7 days" },
];

const state = { user: null };
let cleanup = null; // the current view's teardown (timers, requests)

// --- DOM helpers ------------------------------------------------------------------------------------------------

/** ``h("a", {href: "#/x", class: "y", onclick: f}, "text", child)``: text children become text nodes. */
function h(tag, attrs = {}, ...children) {
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

function main() {
  return document.getElementById("main");
}

function show(...children) {
  const root = main();
  root.replaceChildren(...children.filter(Boolean));
}

function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "—" : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function fmtClock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function fmtAgo(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "—";
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function fmtDeg(value) {
  return value === null || value === undefined ? "—" : `${Number(value).toFixed(1)}°`;
}

function fmtBytes(n) {
  if (!n && n !== 0) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** A coloured pill for a state or verdict (upright, tilted, fallen, pending, unknown). */
function pill(value, { empty = "—", title } = {}) {
  if (!value) return h("span", { class: "muted" }, empty);
  const known = ["upright", "tilted", "fallen", "pending"].includes(value) ? value : "other";
  return h("span", { class: `pill pill-${known}`, title }, value);
}

function notice(kind, text, ...extra) {
  return h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, text, ...extra);
}

function errorText(error) {
  if (error instanceof ApiError) return error.message;
  return "Something went wrong. Please try again.";
}

function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    el.hidden = true;
  }, 3500);
}

/** Route-level handling of errors: 401 goes back to the login page, the rest is shown. */
function handleAuthError(error) {
  if (error instanceof ApiError && error.status === 401) {
    setUser(null);
    toast("Your session has ended. Please log in again.");
    go("#/login");
    return true;
  }
  return false;
}

// --- session and navigation -------------------------------------------------------------------------------------

function setUser(user, csrfToken) {
  state.user = user;
  setCsrfToken(user ? csrfToken : null);
  const operator = Boolean(user && user.role === "operator");
  document.getElementById("nav").hidden = !user;
  document.getElementById("account").hidden = !user;
  document.getElementById("nav-dashboard").hidden = !operator;
  document.getElementById("account-email").textContent = user ? user.email : "";
  document.body.classList.toggle("is-operator", operator);
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, queryString = ""] = raw.split("?");
  return { name: path.split("/")[0] || "", params: new URLSearchParams(queryString) };
}

function markNav(name) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.route === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const { name, params } = parseHash();
  const user = state.user;
  if (!user && name !== "login" && name !== "signup") return go("#/login");
  if (user && (name === "login" || name === "signup" || name === "")) {
    return go(user.role === "operator" ? "#/dashboard" : "#/upload");
  }
  markNav(name);
  const views = { login: authView, signup: authView, upload: uploadView, history: historyView, dashboard: dashboardView };
  const view = views[name];
  if (!view) return go(user ? "#/upload" : "#/login");
  const titles = { login: "Log in", signup: "Sign up", upload: "Upload", history: "History", dashboard: "Dashboard" };
  document.title = `${titles[name]} · P-ZONE`;
  cleanup = view(name, params) || null;
  if (!main().contains(document.activeElement)) main().focus({ preventScroll: true });
}

async function logout() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      toast(errorText(error));
      return;
    }
  }
  setUser(null);
  go("#/login");
}

// --- sign up / log in -------------------------------------------------------------------------------------------

function authView(mode) {
  const signup = mode === "signup";
  const error = h("div", { class: "form-error", role: "alert", "aria-live": "assertive" });
  const email = h("input", {
    id: "auth-email",
    name: "email",
    type: "email",
    autocomplete: "email",
    required: true,
    inputmode: "email",
    spellcheck: "false",
  });
  const password = h("input", {
    id: "auth-password",
    name: "password",
    type: "password",
    autocomplete: signup ? "new-password" : "current-password",
    required: true,
    minlength: signup ? 10 : undefined,
    "aria-describedby": signup ? "auth-password-hint" : undefined,
  });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, signup ? "Create account" : "Log in");
  const form = h(
    "form",
    { class: "stack", novalidate: true, "aria-labelledby": "auth-title" },
    h("div", { class: "field" }, h("label", { for: "auth-email" }, "Email"), email),
    h(
      "div",
      { class: "field" },
      h("label", { for: "auth-password" }, "Password"),
      password,
      signup ? h("p", { class: "hint", id: "auth-password-hint" }, "At least 10 characters.") : null,
    ),
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!email.value.trim() || !password.value) {
      error.textContent = "Enter your email and password.";
      return;
    }
    submit.disabled = true;
    submit.textContent = signup ? "Creating account…" : "Logging in…";
    try {
      const answer = await api(signup ? "/api/auth/signup" : "/api/auth/login", {
        method: "POST",
        json: { email: email.value.trim(), password: password.value },
      });
      setUser(answer.user, answer.csrf_token);
      go(answer.user.role === "operator" ? "#/dashboard" : "#/upload");
    } catch (err) {
      error.textContent = errorText(err);
      submit.disabled = false;
      submit.textContent = signup ? "Create account" : "Log in";
      password.focus();
    }
  });
  show(
    h(
      "section",
      { class: "card auth-card" },
      h("h1", { id: "auth-title" }, signup ? "Create an account" : "Log in"),
      h(
        "p",
        { class: "muted" },
        signup
          ? "Photograph parked e-scooters and help keep the streets clear."
          : "Welcome back. Log in to upload photos of parked scooters.",
      ),
      form,
      h(
        "p",
        { class: "auth-switch" },
        signup ? "Already have an account? " : "New here? ",
        h("a", { href: signup ? "#/login" : "#/signup" }, signup ? "Log in" : "Create an account"),
      ),
    ),
  );
  email.focus();
  return null;
}

// --- upload -----------------------------------------------------------------------------------------------------

function photoDetails(photo) {
  const verdict =
    photo.verdict === "pending"
      ? h("span", {}, pill("pending"), h("span", { class: "muted" }, " waiting for the model"))
      : pill(photo.verdict);
  const rows = [
    ["Device", photo.device_id || "—"],
    ["Zone", photo.zone_id || "—"],
    ["Verdict", verdict],
    ["Model version", photo.model_version || "—"],
    ["Taken", `${fmtTime(photo.taken_at)}${photo.taken_at_source ? ` (${photo.taken_at_source})` : ""}`],
    ["Size", photo.width ? `${photo.width} × ${photo.height} px, ${fmtBytes(photo.size_bytes)}` : "—"],
  ];
  return h("dl", { class: "details" }, rows.map(([key, value]) => [h("dt", {}, key), h("dd", {}, value)]));
}

function resultCard(photo) {
  const img = photo.thumb_url
    ? h("img", { class: "result-thumb", src: photo.thumb_url, alt: "Thumbnail of the uploaded photo", width: 256 })
    : h("div", { class: "thumb-missing" }, "No thumbnail");
  return h(
    "section",
    { class: "card result", id: "upload-result", "aria-labelledby": "result-title", tabindex: "-1" },
    h("h1", { id: "result-title" }, "Photo uploaded"),
    h("div", { class: "result-body" }, img, photoDetails(photo)),
    h(
      "div",
      { class: "actions" },
      h("a", { class: "btn", href: "#/history" }, "See history"),
      h("button", { type: "button", class: "btn btn-primary", id: "upload-another" }, "Upload another"),
    ),
  );
}

function uploadView(_name, params) {
  const timers = new Set();
  let alive = true;
  const error = h("div", { class: "form-error", role: "alert", "aria-live": "assertive" });
  const status = h("p", { class: "status-line", role: "status", "aria-live": "polite" });
  const select = h("select", { id: "device", name: "device", required: true, disabled: true }, h("option", { value: "" }, "Loading devices…"));
  const file = h("input", {
    id: "photo",
    name: "photo",
    type: "file",
    accept: "image/*",
    capture: "environment",
    multiple: true,
    required: true,
    "aria-describedby": "photo-hint",
  });
  const preview = h("img", { class: "preview", alt: "Preview of the chosen photo", hidden: true });
  const bar = h("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress" });
  const percent = h("span", { class: "progress-label" }, "0%");
  const progress = h("div", { class: "progress", hidden: true }, bar, percent);
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, "Upload photo");
  const resultSlot = h("div", { class: "result-slot" });
  let previewUrl = null;

  file.addEventListener("change", () => {
    error.textContent = "";
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    const chosen = file.files && file.files[0];
    submit.textContent = file.files && file.files.length > 1 ? `Upload ${file.files.length} photos` : "Upload photo";
    if (chosen && chosen.type.startsWith("image/")) {
      previewUrl = URL.createObjectURL(chosen);
      preview.src = previewUrl;
      preview.hidden = false;
    } else {
      preview.hidden = true;
      preview.removeAttribute("src");
    }
  });

  const setProgress = (fraction) => {
    const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
    bar.value = pct;
    percent.textContent = `${pct}%`;
  };

  const form = h(
    "form",
    { class: "stack", novalidate: true, "aria-labelledby": "upload-title" },
    h(
      "div",
      { class: "field" },
      h("label", { for: "device" }, "Scooter (device)"),
      select,
      h("p", { class: "hint" }, "Choose the scooter you are photographing."),
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: "photo" }, "Photo"),
      file,
      h(
        "p",
        { class: "hint", id: "photo-hint" },
        `Take a photo of the whole scooter as it is parked (JPEG, PNG or WebP); or pick up to ${BATCH_MAX} at once.`,
      ),
      preview,
    ),
    error,
    progress,
    status,
    submit,
  );

  async function loadDevices() {
    try {
      const devices = await api("/api/devices");
      if (!alive) return;
      const wanted = params.get("device");
      if (!devices.length) {
        select.replaceChildren(h("option", { value: "" }, "No devices known yet"));
        status.textContent = "No devices have reported yet, so there is nothing to photograph.";
        return;
      }
      select.replaceChildren(
        h("option", { value: "" }, "Choose a device…"),
        ...devices.map((d) =>
          h(
            "option",
            { value: d.id, dataset: { zone: d.zone_id }, selected: d.id === wanted },
            `${d.id} · ${d.zone_id}${d.last_state ? ` · ${d.last_state}` : ""}`,
          ),
        ),
      );
      if (devices.length === 1) select.value = devices[0].id;
      select.disabled = false;
    } catch (err) {
      if (!handleAuthError(err) && alive) error.textContent = `Could not load the devices: ${errorText(err)}`;
    }
  }

  function pollVerdict(photo, attempt = 0) {
    if (!alive || photo.verdict !== "pending" || attempt >= VERDICT_POLL_MAX) return;
    const timer = setTimeout(async () => {
      timers.delete(timer);
      try {
        const fresh = await api(`/api/photos/${encodeURIComponent(photo.id)}`);
        if (!alive) return;
        if (fresh.verdict !== "pending") {
          resultSlot.replaceChildren(wireResult(fresh));
          return;
        }
      } catch {
        // keep the result shown; the history page has the verdict later
      }
      pollVerdict(photo, attempt + 1);
    }, VERDICT_POLL_MS);
    timers.add(timer);
  }

  function wireResult(photo) {
    const card = resultCard(photo);
    card.querySelector("#upload-another").addEventListener("click", () => {
      resultSlot.replaceChildren();
      form.reset();
      preview.hidden = true;
      progress.hidden = true;
      status.textContent = "";
      uploadCard.hidden = false;
      file.focus();
    });
    return card;
  }

  /** Like "pending" for the verdict: a photo still "processing" is asked for again until the worker is done. */
  async function untilProcessed(photo) {
    for (let attempt = 0; photo.status === "processing" && attempt < PROCESSING_POLL_MAX && alive; attempt += 1) {
      status.textContent = "Processing photo… (the server is busy, still waiting)";
      await new Promise((resolve) => setTimeout(resolve, PROCESSING_POLL_MS));
      photo = await api(`/api/photos/${encodeURIComponent(photo.id)}/complete`, { method: "POST" });
    }
    return photo;
  }

  async function upload(deviceId, chosen) {
    const contentType = chosen.type || "application/octet-stream";
    status.textContent = "Preparing upload…";
    const created = await api("/api/photos", {
      method: "POST",
      json: { device_id: deviceId, content_type: contentType, size: chosen.size },
    });
    const ticket = created.upload;
    if (chosen.size > ticket.max_bytes) {
      throw new ApiError(413, `The photo is too large: at most ${fmtBytes(ticket.max_bytes)}.`);
    }
    status.textContent = "Uploading…";
    progress.hidden = false;
    setProgress(0);
    try {
      await sendWithProgress(ticket.method || "PUT", ticket.url, {
        headers: ticket.headers,
        body: chosen,
        onProgress: setProgress,
      });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 0)) throw err;
      // The object store could not be reached directly (network, CORS): send it through the API instead.
      status.textContent = "Direct upload failed; uploading through the server…";
      setProgress(0);
      const body = new FormData();
      body.append("device_id", deviceId);
      body.append("file", chosen, chosen.name || "photo");
      const photo = await sendWithProgress("POST", "/api/photos/upload", { body, onProgress: setProgress, withCsrf: true });
      return untilProcessed(photo);
    }
    status.textContent = "Processing photo…";
    return untilProcessed(await api(`/api/photos/${encodeURIComponent(created.photo.id)}/complete`, { method: "POST" }));
  }

  /** Several photos: one batch create, a direct PUT each (one progress bar for all bytes), one batch complete. */
  async function uploadBatch(deviceId, chosen) {
    status.textContent = `Preparing ${chosen.length} uploads…`;
    const created = await api("/api/photos/batch", {
      method: "POST",
      json: {
        photos: chosen.map((f) => ({ device_id: deviceId, content_type: f.type || "application/octet-stream", size: f.size })),
      },
    });
    const total = chosen.reduce((sum, f) => sum + f.size, 0) || 1;
    let sent = 0;
    progress.hidden = false;
    setProgress(0);
    const ids = [];
    const failed = new Map(); // photo id -> reason, for photos that never reached the store
    for (const [index, item] of created.items.entries()) {
      const photoFile = chosen[index];
      status.textContent = `Uploading ${index + 1} of ${chosen.length}…`;
      try {
        await sendWithProgress(item.upload.method || "PUT", item.upload.url, {
          headers: item.upload.headers,
          body: photoFile,
          onProgress: (fraction) => setProgress((sent + fraction * photoFile.size) / total),
        });
        ids.push(item.photo.id);
      } catch (err) {
        failed.set(item.photo.id, errorText(err));
      }
      sent += photoFile.size;
      setProgress(sent / total);
    }
    status.textContent = "Processing photos…";
    const answers = ids.length
      ? (await api("/api/photos/batch/complete", { method: "POST", json: { ids } })).items
      : [];
    const byId = new Map(answers.map((answer) => [answer.id, answer]));
    const results = [];
    for (const [index, item] of created.items.entries()) {
      const name = chosen[index].name || `photo ${index + 1}`;
      const answer = byId.get(item.photo.id);
      if (!answer) {
        results.push({ name, error: failed.get(item.photo.id) || "not uploaded" });
      } else if (answer.error) {
        results.push({ name, error: answer.error.reason });
      } else {
        results.push({ name, photo: answer.status === 202 ? await untilProcessed(answer.photo) : answer.photo });
      }
    }
    return results;
  }

  function batchResultCard(results) {
    const stored = results.filter((r) => r.photo).length;
    const items = results.map((r) =>
      h(
        "li",
        { class: `batch-item${r.error ? " batch-item-error" : ""}` },
        r.photo && r.photo.thumb_url
          ? h("img", { class: "batch-thumb", src: r.photo.thumb_url, alt: `Thumbnail of ${r.name}`, width: 128 })
          : h("div", { class: "thumb-missing" }, r.error ? "Refused" : "No thumbnail"),
        h(
          "div",
          { class: "batch-text" },
          h("strong", {}, r.name),
          r.error ? h("p", { class: "form-error" }, r.error) : h("p", {}, pill(r.photo.verdict)),
        ),
      ),
    );
    const card = h(
      "section",
      { class: "card result", id: "batch-result", "aria-labelledby": "batch-title", tabindex: "-1" },
      h("h1", { id: "batch-title" }, `${stored} of ${results.length} photos uploaded`),
      h("ul", { class: "batch-list" }, items),
      h(
        "div",
        { class: "actions" },
        h("a", { class: "btn", href: "#/history" }, "See history"),
        h("button", { type: "button", class: "btn btn-primary", id: "upload-another" }, "Upload more"),
      ),
    );
    card.querySelector("#upload-another").addEventListener("click", () => {
      resultSlot.replaceChildren();
      form.reset();
      submit.textContent = "Upload photo";
      preview.hidden = true;
      progress.hidden = true;
      status.textContent = "";
      uploadCard.hidden = false;
      file.focus();
    });
    return card;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const chosen = file.files && file.files[0];
    const many = file.files ? Array.from(file.files) : [];
    if (!select.value) {
      error.textContent = "Choose the device you photographed.";
      select.focus();
      return;
    }
    if (!chosen) {
      error.textContent = "Choose or take a photo first.";
      file.focus();
      return;
    }
    const notImage = many.find((f) => f.type && !f.type.startsWith("image/"));
    if (notImage) {
      error.textContent = `${many.length > 1 ? `${notImage.name} is` : "This file is"} not an image. Choose a JPEG, PNG or WebP photo.`;
      return;
    }
    if (many.length > BATCH_MAX) {
      error.textContent = `Choose at most ${BATCH_MAX} photos at once.`;
      return;
    }
    submit.disabled = true;
    select.disabled = true;
    file.disabled = true;
    try {
      if (many.length > 1) {
        const results = await uploadBatch(select.value, many);
        if (!alive) return;
        setProgress(1);
        status.textContent = "Done.";
        uploadCard.hidden = true;
        const card = batchResultCard(results);
        resultSlot.replaceChildren(card);
        card.focus();
        return;
      }
      const photo = await upload(select.value, chosen);
      if (!alive) return;
      setProgress(1);
      status.textContent = "Done.";
      uploadCard.hidden = true;
      const card = wireResult(photo);
      resultSlot.replaceChildren(card);
      card.focus();
      pollVerdict(photo);
    } catch (err) {
      if (handleAuthError(err) || !alive) return;
      status.textContent = "";
      progress.hidden = true;
      error.textContent = errorText(err);
    } finally {
      submit.disabled = false;
      select.disabled = select.options.length <= 1 && !select.value;
      file.disabled = false;
    }
  });

  const uploadCard = h(
    "section",
    { class: "card upload-card" },
    h("h1", { id: "upload-title" }, "Photograph a parked scooter"),
    h("p", { class: "muted" }, "Pick the scooter, take a photo, and we check whether it is parked upright."),
    form,
  );
  show(uploadCard, resultSlot);
  loadDevices();
  return () => {
    alive = false;
    for (const timer of timers) clearTimeout(timer);
    if (previewUrl) URL.revokeObjectURL(previewUrl);
  };
}

// --- history ----------------------------------------------------------------------------------------------------

function pageLink(page, disabled, rel, label) {
  if (disabled) return h("span", { class: "btn is-disabled", "aria-disabled": "true" }, label);
  return h("a", { class: "btn", href: `#/history?page=${page}`, rel }, label);
}

/** "Predicted vs measured": the measured label (sensor or operator), and whether the model's verdict agrees. */
function measuredCell(photo) {
  const m = photo.measured;
  if (!m) return pill(null);
  const title =
    m.source === "manual"
      ? "Set by an operator"
      : `Measured by the scooter's tilt sensor ${Math.round(m.gap_s ?? 0)} s from the photo (quality ${Math.round((m.quality ?? 0) * 100)}%)`;
  const parts = [pill(m.label, { title })];
  if (m.source === "manual") parts.push(h("span", { class: "muted" }, " (operator)"));
  if (photo.verdict && photo.verdict !== "pending") {
    const agrees = photo.verdict === m.label;
    parts.push(h("span", { class: "muted", title: agrees ? "The model agrees" : "The model disagrees" }, agrees ? " ✓" : " ✗"));
  }
  return parts;
}

function historyView(_name, params) {
  const page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  const controller = new AbortController();
  const body = h("div", {}, h("p", { class: "muted", role: "status" }, "Loading your photos…"));
  show(
    h(
      "section",
      { class: "card" },
      h(
        "div",
        { class: "section-head" },
        h("h1", {}, "Your photos"),
        h("a", { class: "btn btn-primary", href: "#/upload" }, "Upload a photo"),
      ),
      body,
    ),
  );

  api("/api/photos", { query: { page, page_size: HISTORY_PAGE_SIZE }, signal: controller.signal })
    .then((result) => {
      const pages = Math.max(1, Math.ceil(result.total / result.page_size));
      if (!result.items.length) {
        body.replaceChildren(
          result.total
            ? notice("info", "This page is empty. ", h("a", { href: "#/history" }, "Back to the first page"))
            : h(
                "div",
                { class: "empty" },
                h("p", {}, "No photos yet."),
                h("a", { class: "btn btn-primary", href: "#/upload" }, "Upload your first photo"),
              ),
        );
        return;
      }
      const head = ["Photo", "Taken", "Device", "Verdict", "Model", "Measured"];
      const table = h(
        "table",
        { class: "table history-table" },
        h("caption", { class: "visually-hidden" }, "Your photos, newest first"),
        h("thead", {}, h("tr", {}, head.map((label) => h("th", { scope: "col" }, label)))),
        h(
          "tbody",
          {},
          result.items.map((photo) =>
            h(
              "tr",
              { dataset: { photoId: photo.id } },
              h(
                "td",
                { "data-label": "Photo", class: "cell-thumb" },
                photo.thumb_url
                  ? h("img", {
                      class: "thumb",
                      src: photo.thumb_url,
                      alt: `Photo of ${photo.device_id || "a scooter"}`,
                      loading: "lazy",
                      width: 72,
                      height: 72,
                    })
                  : h("span", { class: "thumb-missing" }, "—"),
              ),
              h("td", { "data-label": "Taken" }, h("time", { datetime: photo.taken_at || photo.created_at }, fmtTime(photo.taken_at || photo.created_at))),
              h("td", { "data-label": "Device" }, photo.device_id || photo.zone_id || "—"),
              h("td", { "data-label": "Verdict", class: "cell-verdict" }, pill(photo.verdict)),
              h("td", { "data-label": "Model", class: "cell-model" }, photo.model_version || "—"),
              h(
                "td",
                { "data-label": "Measured", class: "cell-measured" },
                measuredCell(photo),
              ),
            ),
          ),
        ),
      );
      const pager = h(
        "nav",
        { class: "pager", "aria-label": "Pages" },
        pageLink(page - 1, page <= 1, "prev", "← Newer"),
        h("span", { class: "pager-info" }, `Page ${page} of ${pages} · ${result.total} photo${result.total === 1 ? "" : "s"}`),
        pageLink(page + 1, page >= pages, "next", "Older →"),
      );
      body.replaceChildren(h("div", { class: "table-wrap" }, table), pager);
    })
    .catch((err) => {
      if (err && err.name === "AbortError") return;
      if (!handleAuthError(err)) body.replaceChildren(notice("error", `Could not load your photos: ${errorText(err)}`));
    });
  return () => controller.abort();
}

// --- dashboard --------------------------------------------------------------------------------------------------

function dashboardView() {
  if (state.user.role !== "operator") {
    show(
      h(
        "section",
        { class: "card" },
        h("h1", {}, "Dashboard"),
        notice("error", "The dashboard is for operators only."),
      ),
    );
    return null;
  }
  let alive = true;
  let timer = null;
  let inFlight = null;
  let selected = null;
  let minutes = 60;
  let lastDevices = [];
  let lastSeries = null;
  let resizeTimer = null;
  let accuracyWindow = ACCURACY_WINDOWS[2];
  let accuracyMetric = "accuracy";
  let lastAccuracy = null;

  const updated = h("span", { class: "live", role: "status", "aria-live": "polite" }, "Loading…");
  const banner = h("div", { class: "banner-slot" });
  const tiles = h("div", { class: "tiles", id: "summary" });
  const devicesBox = h("div", { class: "table-wrap", id: "devices" });
  const alarmsBox = h("div", { id: "alarms" });
  const chartTitle = h("h2", { id: "chart-title" }, "Tilt");
  const chartBox = h("div", { class: "chart-box", id: "tilt-chart" });
  const windowSelect = h(
    "select",
    { id: "tilt-window", "aria-label": "Time window" },
    TILT_WINDOWS.map((m) => h("option", { value: m, selected: m === minutes }, m < 60 ? `${m} min` : `${m / 60} h`)),
  );
  windowSelect.addEventListener("change", () => {
    minutes = Number(windowSelect.value);
    refresh();
  });
  const accuracyBox = h("div", { class: "chart-box", id: "accuracy-chart" });
  const accuracyLegend = h("div", { class: "accuracy-legend", id: "accuracy-legend" });
  const accuracyWindowSelect = h(
    "select",
    { id: "accuracy-window", "aria-label": "Accuracy window" },
    ACCURACY_WINDOWS.map((w) =>
      h("option", { value: w.window, selected: w === accuracyWindow }, `${w.label} (per ${w.bucket})`),
    ),
  );
  accuracyWindowSelect.addEventListener("change", () => {
    accuracyWindow = ACCURACY_WINDOWS.find((w) => w.window === accuracyWindowSelect.value) || ACCURACY_WINDOWS[2];
    refresh();
  });
  const accuracyMetricSelect = h(
    "select",
    { id: "accuracy-metric", "aria-label": "Accuracy metric" },
    h("option", { value: "accuracy", selected: true }, "Accuracy"),
    h("option", { value: "macro_f1" }, "Macro-F1"),
  );
  accuracyMetricSelect.addEventListener("change", () => {
    accuracyMetric = accuracyMetricSelect.value;
    drawAccuracy();
  });

  show(
    h(
      "div",
      { class: "dashboard" },
      h("div", { class: "section-head" }, h("h1", {}, "Fleet dashboard"), updated),
      banner,
      h("section", { "aria-label": "Summary" }, tiles),
      h(
        "div",
        { class: "dash-grid" },
        h(
          "section",
          { class: "card devices-card", "aria-labelledby": "devices-title" },
          h("h2", { id: "devices-title" }, "Devices"),
          devicesBox,
        ),
        h(
          "section",
          { class: "card alarms-card", "aria-labelledby": "alarms-title" },
          h("h2", { id: "alarms-title" }, "Open alarms"),
          alarmsBox,
        ),
        h(
          "section",
          { class: "card chart-card", "aria-labelledby": "chart-title" },
          h("div", { class: "section-head" }, chartTitle, h("label", { class: "inline-label" }, "Window ", windowSelect)),
          chartBox,
          h(
            "p",
            { class: "legend", "aria-hidden": "true" },
            h("span", { class: "dot dot-upright" }),
            "upright ",
            h("span", { class: "dot dot-tilted" }),
            "tilted ",
            h("span", { class: "dot dot-fallen" }),
            "fallen",
          ),
        ),
        h(
          "section",
          { class: "card accuracy-card", "aria-labelledby": "accuracy-title" },
          h(
            "div",
            { class: "section-head" },
            h("h2", { id: "accuracy-title" }, "Live accuracy"),
            h(
              "div",
              { class: "chart-controls" },
              h("label", { class: "inline-label" }, "Show ", accuracyMetricSelect),
              h("label", { class: "inline-label" }, "Window ", accuracyWindowSelect),
            ),
          ),
          h(
            "p",
            { class: "muted chart-note" },
            "The model's verdicts checked against the state the scooter's sensor measured (or an operator set), one line per model version.",
          ),
          accuracyBox,
          accuracyLegend,
        ),
      ),
    ),
  );

  function select(deviceId) {
    selected = deviceId;
    renderDevices(lastDevices);
    refresh();
  }

  function renderSummary(summary) {
    const items = [
      ["Zones", summary.zones, ""],
      ["Devices", summary.devices, ""],
      ["Online", summary.online, ""],
      ["Open alarms", summary.open_alarms, summary.open_alarms > 0 ? "tile-alarm" : "tile-ok"],
      ["Readings (last hour)", summary.readings_last_hour, ""],
      ["Upright", summary.states.upright, "tile-upright"],
      ["Tilted", summary.states.tilted, "tile-tilted"],
      ["Fallen", summary.states.fallen, "tile-fallen"],
    ];
    tiles.replaceChildren(
      ...items.map(([label, value, cls]) =>
        h("div", { class: `tile ${cls}` }, h("span", { class: "tile-value" }, String(value)), h("span", { class: "tile-label" }, label)),
      ),
    );
  }

  function renderDevices(devices) {
    lastDevices = devices;
    if (!devices.length) {
      devicesBox.replaceChildren(h("p", { class: "empty" }, "No devices have reported yet."));
      return;
    }
    const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.deviceId : null;
    const table = h(
      "table",
      { class: "table devices-table" },
      h("caption", { class: "visually-hidden" }, "Devices; choose one to see its tilt chart"),
      h(
        "thead",
        {},
        h("tr", {}, ["Device", "Zone", "State", "Tilt", "Battery", "Status", "Last reading", "Alarm"].map((l) => h("th", { scope: "col" }, l))),
      ),
      h(
        "tbody",
        {},
        devices.map((d) => {
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
                  onclick: () => select(d.id),
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
            if (!(event.target instanceof HTMLButtonElement)) select(d.id);
          });
          return row;
        }),
      ),
    );
    devicesBox.replaceChildren(table);
    if (focusedId) {
      const again = devicesBox.querySelector(`button[data-device-id="${CSS.escape(focusedId)}"]`);
      if (again) again.focus({ preventScroll: true });
    }
  }

  function renderAlarms(alarms) {
    if (!alarms.length) {
      alarmsBox.replaceChildren(h("p", { class: "empty empty-ok" }, "No open alarms. All scooters are standing."));
      return;
    }
    alarmsBox.replaceChildren(
      h(
        "ul",
        { class: "alarm-list" },
        alarms.map((a) =>
          h(
            "li",
            { class: "alarm", dataset: { alarmId: a.id } },
            h(
              "button",
              { type: "button", class: "alarm-button", onclick: () => select(a.device_id), "aria-label": `Show the tilt of ${a.device_id}` },
              h("span", { class: "alarm-head" }, h("strong", {}, a.device_id), " · ", a.zone_id, " ", pill(a.kind)),
              h(
                "span",
                { class: "alarm-meta" },
                `Opened ${fmtTime(a.opened_at)} (${fmtAgo(a.opened_at)}) at ${fmtDeg(a.opened_tilt_deg)}`,
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function renderChart(signal) {
    if (!selected) {
      lastSeries = null;
      chartTitle.textContent = "Tilt";
      chartBox.replaceChildren(h("p", { class: "empty" }, "Choose a device to see its tilt."));
      return;
    }
    const series = await api(`/api/dashboard/devices/${encodeURIComponent(selected)}/tilt`, { query: { minutes }, signal });
    if (!alive) return;
    lastSeries = { series, minutes };
    drawChart();
  }

  function drawChart() {
    if (!lastSeries) return;
    const { series, minutes: span } = lastSeries;
    chartTitle.textContent = `Tilt of ${series.device_id}`;
    // Drawn at the box's own width so that the labels keep their size on a phone.
    const width = Math.max(300, Math.min(1100, chartBox.clientWidth || 640));
    chartBox.replaceChildren(tiltChart(series.points, { minutes: span, deviceId: series.device_id, width }));
  }

  function drawAccuracy() {
    if (!lastAccuracy) return;
    const width = Math.max(300, Math.min(1100, accuracyBox.clientWidth || 640));
    accuracyBox.replaceChildren(
      accuracyChart(lastAccuracy.versions, {
        since: lastAccuracy.since,
        until: lastAccuracy.until,
        bucketS: lastAccuracy.bucket_s,
        metric: accuracyMetric,
        width,
      }),
    );
  }

  function renderAccuracy(report) {
    lastAccuracy = report;
    drawAccuracy();
    const pct = (value) => (value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)}%`);
    const pending =
      report.pending_label > 0
        ? h(
            "p",
            { class: "muted" },
            `${report.pending_label} prediction${report.pending_label === 1 ? "" : "s"} waiting for a measured label.`,
          )
        : null;
    if (!report.versions.length) {
      accuracyLegend.replaceChildren(h("p", { class: "empty" }, "No predictions in this window yet."));
      return;
    }
    accuracyLegend.replaceChildren(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "table accuracy-table" },
          h("caption", { class: "visually-hidden" }, "Live accuracy per model version over the window"),
          h(
            "thead",
            {},
            h("tr", {}, ["Model version", "Scored", "Waiting", "Accuracy", "Macro-F1"].map((l) => h("th", { scope: "col" }, l))),
          ),
          h(
            "tbody",
            {},
            report.versions.map((v, i) =>
              h(
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
              ),
            ),
          ),
        ),
      ),
      pending,
    );
  }

  async function refresh() {
    if (!alive) return;
    clearTimeout(timer);
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const signal = controller.signal;
    try {
      const [summary, devices, alarms, accuracy] = await Promise.all([
        api("/api/dashboard/summary", { signal }),
        api("/api/dashboard/devices", { signal }),
        api("/api/dashboard/alarms", { query: { open: true }, signal }),
        api("/api/accuracy", { query: { window: accuracyWindow.window, bucket: accuracyWindow.bucket }, signal }),
      ]);
      if (!alive) return;
      if (selected && !devices.some((d) => d.id === selected)) selected = null;
      if (!selected && devices.length) {
        const alarmed = devices.find((d) => d.open_alarm);
        selected = (alarmed || devices[0]).id;
      }
      renderSummary(summary);
      renderDevices(devices);
      renderAlarms(alarms);
      renderAccuracy(accuracy);
      await renderChart(signal);
      banner.replaceChildren();
      updated.textContent = `Updated ${fmtClock(new Date())} · refreshes every ${DASHBOARD_REFRESH_MS / 1000} s`;
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (handleAuthError(err)) return;
      banner.replaceChildren(notice("error", `Could not refresh the dashboard: ${errorText(err)} Retrying…`));
    } finally {
      if (inFlight === controller) inFlight = null;
      // Paused while the tab is hidden; the visibilitychange handler refreshes when it is shown again.
      if (alive && !signal.aborted && !document.hidden) timer = setTimeout(refresh, DASHBOARD_REFRESH_MS);
    }
  }

  const onVisibility = () => {
    if (document.visibilityState === "visible") refresh();
  };
  const onResize = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      drawChart();
      drawAccuracy();
    }, 150);
  };
  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("resize", onResize);
  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
    clearTimeout(resizeTimer);
    window.removeEventListener("resize", onResize);
    if (inFlight) inFlight.abort();
    document.removeEventListener("visibilitychange", onVisibility);
  };
}

// --- start ------------------------------------------------------------------------------------------------------

async function start() {
  document.getElementById("logout").addEventListener("click", logout);
  try {
    const me = await api("/api/auth/me");
    setUser({ id: me.id, email: me.email, role: me.role }, me.csrf_token);
  } catch (error) {
    setUser(null);
    if (!(error instanceof ApiError && error.status === 401)) toast(errorText(error));
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
