// The upload page (#/upload?device=…): choose a scooter and one or more photos, send them, show the result and
// follow a pending verdict until the model answers. The sending itself is in upload/send.js, the result cards in
// upload/results.js.

import { api } from "../api.js";
import { errorText, h, show } from "../dom.js";
import { handleAuthError } from "../session.js";
import { batchResultCard, resultCard } from "./upload/results.js";
import { BATCH_MAX, sendBatch, sendPhoto } from "./upload/send.js";

const VERDICT_POLL_MS = 5000;
const VERDICT_POLL_MAX = 24;

/** The form and its controls, and ``setProgress(fraction)`` for its progress bar. */
function uploadForm() {
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
  return { form, error, status, select, file, preview, progress, submit, setProgress };
}

function uploadCard(form) {
  return h(
    "section",
    { class: "card upload-card" },
    h("h1", { id: "upload-title" }, "Photograph a parked scooter"),
    h("p", { class: "muted" }, "Pick the scooter, take a photo, and we check whether it is parked upright."),
    form,
  );
}

/** The preview shows the first chosen photo, and the button says how many will go. */
function followChosenFiles(page) {
  const { error, file, preview, submit } = page.ui;
  file.addEventListener("change", () => {
    error.textContent = "";
    if (page.previewUrl) URL.revokeObjectURL(page.previewUrl);
    const chosen = file.files && file.files[0];
    submit.textContent = file.files && file.files.length > 1 ? `Upload ${file.files.length} photos` : "Upload photo";
    if (chosen && chosen.type.startsWith("image/")) {
      page.previewUrl = URL.createObjectURL(chosen);
      preview.src = page.previewUrl;
      preview.hidden = false;
    } else {
      preview.hidden = true;
      preview.removeAttribute("src");
    }
  });
}

/** Fills the device list; ``wanted`` (the hash's ?device=) comes preselected. */
async function loadDevices(page, wanted) {
  const { error, select, status } = page.ui;
  try {
    const devices = await api("/api/devices");
    if (!page.alive) return;
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
    if (!handleAuthError(err) && page.alive) error.textContent = `Could not load the devices: ${errorText(err)}`;
  }
}

/** Back to an empty form, for the next photo. */
function startOver(page) {
  const { form, submit, preview, progress, status, file } = page.ui;
  page.resultSlot.replaceChildren();
  form.reset();
  submit.textContent = "Upload photo";
  preview.hidden = true;
  progress.hidden = true;
  status.textContent = "";
  page.uploadCard.hidden = false;
  file.focus();
}

/** Shows a result card in place of any earlier one, its "upload another" button wired. */
function showResult(page, card) {
  card.querySelector("#upload-another").addEventListener("click", () => startOver(page));
  page.resultSlot.replaceChildren(card);
  return card;
}

/** A verdict still "pending" is asked for again every few seconds, a bounded number of times. */
function pollVerdict(page, photo, attempt = 0) {
  if (!page.alive || photo.verdict !== "pending" || attempt >= VERDICT_POLL_MAX) return;
  const timer = setTimeout(async () => {
    page.timers.delete(timer);
    try {
      const fresh = await api(`/api/photos/${encodeURIComponent(photo.id)}`);
      if (!page.alive) return;
      if (fresh.verdict !== "pending") {
        showResult(page, resultCard(fresh));
        return;
      }
    } catch {
      // keep the result shown; the history page has the verdict later
    }
    pollVerdict(page, photo, attempt + 1);
  }, VERDICT_POLL_MS);
  page.timers.add(timer);
}

/** Whether the form names a device and at most BATCH_MAX images; if not, says why (and focuses what to fix). */
function choiceIsValid(ui, chosen) {
  const { error, select, file } = ui;
  if (!select.value) {
    error.textContent = "Choose the device you photographed.";
    select.focus();
    return false;
  }
  if (!chosen.length) {
    error.textContent = "Choose or take a photo first.";
    file.focus();
    return false;
  }
  const notImage = chosen.find((f) => f.type && !f.type.startsWith("image/"));
  if (notImage) {
    error.textContent = `${chosen.length > 1 ? `${notImage.name} is` : "This file is"} not an image. Choose a JPEG, PNG or WebP photo.`;
    return false;
  }
  if (chosen.length > BATCH_MAX) {
    error.textContent = `Choose at most ${BATCH_MAX} photos at once.`;
    return false;
  }
  return true;
}

/** How send.js reports to this page: the status line, the progress bar, and whether the page is still shown. */
function feedback(page) {
  const { status, progress, setProgress } = page.ui;
  return {
    say: (text) => {
      status.textContent = text;
    },
    showProgress: () => {
      progress.hidden = false;
    },
    setProgress,
    alive: () => page.alive,
  };
}

/** The upload is done: the form gives way to the result card. */
function finish(page, card) {
  page.ui.setProgress(1);
  page.ui.status.textContent = "Done.";
  page.uploadCard.hidden = true;
  showResult(page, card).focus();
}

async function submitUpload(page) {
  const { ui } = page;
  ui.error.textContent = "";
  const chosen = ui.file.files ? Array.from(ui.file.files) : [];
  if (!choiceIsValid(ui, chosen)) return;
  ui.submit.disabled = true;
  ui.select.disabled = true;
  ui.file.disabled = true;
  try {
    if (chosen.length > 1) {
      const results = await sendBatch(ui.select.value, chosen, feedback(page));
      if (!page.alive) return;
      finish(page, batchResultCard(results));
      return;
    }
    const photo = await sendPhoto(ui.select.value, chosen[0], feedback(page));
    if (!page.alive) return;
    finish(page, resultCard(photo));
    pollVerdict(page, photo);
  } catch (err) {
    if (handleAuthError(err) || !page.alive) return;
    ui.status.textContent = "";
    ui.progress.hidden = true;
    ui.error.textContent = errorText(err);
  } finally {
    ui.submit.disabled = false;
    ui.select.disabled = ui.select.options.length <= 1 && !ui.select.value;
    ui.file.disabled = false;
  }
}

export function uploadView(_name, params) {
  const ui = uploadForm();
  const page = {
    ui,
    uploadCard: uploadCard(ui.form),
    resultSlot: h("div", { class: "result-slot" }),
    alive: true,
    timers: new Set(),
    previewUrl: null,
  };
  followChosenFiles(page);
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitUpload(page);
  });
  show(page.uploadCard, page.resultSlot);
  loadDevices(page, params.get("device"));
  return () => {
    page.alive = false;
    for (const timer of page.timers) clearTimeout(timer);
    if (page.previewUrl) URL.revokeObjectURL(page.previewUrl);
  };
}
