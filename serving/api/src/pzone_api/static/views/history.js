// The history page (#/history?page=N): the user's photos, newest first, with the model's verdict next to the
// measured state, a page at a time.

import { api } from "../api.js";
import { errorText, fmtTime, h, notice, pill, show } from "../dom.js";
import { handleAuthError } from "../session.js";

const HISTORY_PAGE_SIZE = 10;
const COLUMNS = ["Photo", "Taken", "Device", "Verdict", "Model", "Measured"];

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

function photoRow(photo) {
  return h(
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
    h("td", { "data-label": "Measured", class: "cell-measured" }, measuredCell(photo)),
  );
}

function photoTable(photos) {
  return h(
    "table",
    { class: "table history-table" },
    h("caption", { class: "visually-hidden" }, "Your photos, newest first"),
    h("thead", {}, h("tr", {}, COLUMNS.map((label) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, photos.map(photoRow)),
  );
}

function pager(page, pages, total) {
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    pageLink(page - 1, page <= 1, "prev", "← Newer"),
    h("span", { class: "pager-info" }, `Page ${page} of ${pages} · ${total} photo${total === 1 ? "" : "s"}`),
    pageLink(page + 1, page >= pages, "next", "Older →"),
  );
}

/** A page without photos: past the last page, or no photos at all yet. */
function emptyPage(total) {
  return total
    ? notice("info", "This page is empty. ", h("a", { href: "#/history" }, "Back to the first page"))
    : h(
        "div",
        { class: "empty" },
        h("p", {}, "No photos yet."),
        h("a", { class: "btn btn-primary", href: "#/upload" }, "Upload your first photo"),
      );
}

function historyCard(body) {
  return h(
    "section",
    { class: "card" },
    h(
      "div",
      { class: "section-head" },
      h("h1", {}, "Your photos"),
      h("a", { class: "btn btn-primary", href: "#/upload" }, "Upload a photo"),
    ),
    body,
  );
}

export function historyView(_name, params) {
  const page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  const controller = new AbortController();
  const body = h("div", {}, h("p", { class: "muted", role: "status" }, "Loading your photos…"));
  show(historyCard(body));

  api("/api/photos", { query: { page, page_size: HISTORY_PAGE_SIZE }, signal: controller.signal })
    .then((result) => {
      if (!result.items.length) {
        body.replaceChildren(emptyPage(result.total));
        return;
      }
      const pages = Math.max(1, Math.ceil(result.total / result.page_size));
      body.replaceChildren(h("div", { class: "table-wrap" }, photoTable(result.items)), pager(page, pages, result.total));
    })
    .catch((err) => {
      if (err && err.name === "AbortError") return;
      if (!handleAuthError(err)) body.replaceChildren(notice("error", `Could not load your photos: ${errorText(err)}`));
    });
  return () => controller.abort();
}
