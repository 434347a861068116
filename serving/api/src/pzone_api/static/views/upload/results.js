// What the upload page shows once photos are stored: one photo's card (thumbnail, details, verdict) or a batch's
// list. Each card has an #upload-another button; the page wires it.

import { fmtBytes, fmtTime, h, pill } from "../../dom.js";

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

function resultActions(againLabel) {
  return h(
    "div",
    { class: "actions" },
    h("a", { class: "btn", href: "#/history" }, "See history"),
    h("button", { type: "button", class: "btn btn-primary", id: "upload-another" }, againLabel),
  );
}

export function resultCard(photo) {
  const img = photo.thumb_url
    ? h("img", { class: "result-thumb", src: photo.thumb_url, alt: "Thumbnail of the uploaded photo", width: 256 })
    : h("div", { class: "thumb-missing" }, "No thumbnail");
  return h(
    "section",
    { class: "card result", id: "upload-result", "aria-labelledby": "result-title", tabindex: "-1" },
    h("h1", { id: "result-title" }, "Photo uploaded"),
    h("div", { class: "result-body" }, img, photoDetails(photo)),
    resultActions("Upload another"),
  );
}

/** One line of a batch's list: ``{name, photo}`` with its thumbnail and verdict, or ``{name, error}``. */
function batchItem(r) {
  return h(
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
  );
}

export function batchResultCard(results) {
  const stored = results.filter((r) => r.photo).length;
  return h(
    "section",
    { class: "card result", id: "batch-result", "aria-labelledby": "batch-title", tabindex: "-1" },
    h("h1", { id: "batch-title" }, `${stored} of ${results.length} photos uploaded`),
    h("ul", { class: "batch-list" }, results.map(batchItem)),
    resultActions("Upload more"),
  );
}
