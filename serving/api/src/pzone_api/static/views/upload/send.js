// Sending photos to the API: a presigned PUT straight to the object store (through the API when the store cannot be
// reached), then "complete"; several photos as one batch. ``feedback`` is how the page hears of it:
// ``say(text)`` for the status line, ``showProgress()`` and ``setProgress(fraction)`` for the bar, ``alive()``
// false once the page is gone.

import { ApiError, api, sendWithProgress } from "../../api.js";
import { errorText, fmtBytes } from "../../dom.js";

export const BATCH_MAX = 20; // photos per batch upload: the API's PZONE_UPLOAD_BATCH_MAX default
// 202 "processing": the photo worker did not answer within the API's wait; ask again (each ask waits too).
const PROCESSING_POLL_MS = 1000;
const PROCESSING_POLL_MAX = 30;

/** Like "pending" for the verdict: a photo still "processing" is asked for again until the worker is done. */
async function untilProcessed(photo, feedback) {
  for (let attempt = 0; photo.status === "processing" && attempt < PROCESSING_POLL_MAX && feedback.alive(); attempt += 1) {
    feedback.say("Processing photo… (the server is busy, still waiting)");
    await new Promise((resolve) => setTimeout(resolve, PROCESSING_POLL_MS));
    photo = await api(`/api/photos/${encodeURIComponent(photo.id)}/complete`, { method: "POST" });
  }
  return photo;
}

/** The fallback when the object store cannot be reached directly (network, CORS): the photo goes through the API. */
async function sendThroughApi(deviceId, chosen, feedback) {
  feedback.say("Direct upload failed; uploading through the server…");
  feedback.setProgress(0);
  const body = new FormData();
  body.append("device_id", deviceId);
  body.append("file", chosen, chosen.name || "photo");
  const photo = await sendWithProgress("POST", "/api/photos/upload", {
    body,
    onProgress: feedback.setProgress,
    withCsrf: true,
  });
  return untilProcessed(photo, feedback);
}

/** One photo: create, PUT the bytes, complete; the stored photo (its verdict may still be "pending"). */
export async function sendPhoto(deviceId, chosen, feedback) {
  const contentType = chosen.type || "application/octet-stream";
  feedback.say("Preparing upload…");
  const created = await api("/api/photos", {
    method: "POST",
    json: { device_id: deviceId, content_type: contentType, size: chosen.size },
  });
  const ticket = created.upload;
  if (chosen.size > ticket.max_bytes) {
    throw new ApiError(413, `The photo is too large: at most ${fmtBytes(ticket.max_bytes)}.`);
  }
  feedback.say("Uploading…");
  feedback.showProgress();
  feedback.setProgress(0);
  try {
    await sendWithProgress(ticket.method || "PUT", ticket.url, {
      headers: ticket.headers,
      body: chosen,
      onProgress: feedback.setProgress,
    });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 0)) throw err;
    return sendThroughApi(deviceId, chosen, feedback);
  }
  feedback.say("Processing photo…");
  const photo = await api(`/api/photos/${encodeURIComponent(created.photo.id)}/complete`, { method: "POST" });
  return untilProcessed(photo, feedback);
}

/** The batch's PUTs, one after the other, on one progress bar for all bytes: the ids stored and why the rest failed. */
async function putBatch(items, chosen, feedback) {
  const total = chosen.reduce((sum, f) => sum + f.size, 0) || 1;
  let sent = 0;
  feedback.showProgress();
  feedback.setProgress(0);
  const ids = [];
  const failed = new Map(); // photo id -> reason, for photos that never reached the store
  for (const [index, item] of items.entries()) {
    const photoFile = chosen[index];
    feedback.say(`Uploading ${index + 1} of ${chosen.length}…`);
    try {
      await sendWithProgress(item.upload.method || "PUT", item.upload.url, {
        headers: item.upload.headers,
        body: photoFile,
        onProgress: (fraction) => feedback.setProgress((sent + fraction * photoFile.size) / total),
      });
      ids.push(item.photo.id);
    } catch (err) {
      failed.set(item.photo.id, errorText(err));
    }
    sent += photoFile.size;
    feedback.setProgress(sent / total);
  }
  return { ids, failed };
}

/**
 * Several photos: one batch create, a direct PUT each, one batch complete. One result per file, in order:
 * ``{name, photo}`` or ``{name, error}``.
 */
export async function sendBatch(deviceId, chosen, feedback) {
  feedback.say(`Preparing ${chosen.length} uploads…`);
  const created = await api("/api/photos/batch", {
    method: "POST",
    json: {
      photos: chosen.map((f) => ({ device_id: deviceId, content_type: f.type || "application/octet-stream", size: f.size })),
    },
  });
  const { ids, failed } = await putBatch(created.items, chosen, feedback);
  feedback.say("Processing photos…");
  const answers = ids.length ? (await api("/api/photos/batch/complete", { method: "POST", json: { ids } })).items : [];
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
      const photo = answer.status === 202 ? await untilProcessed(answer.photo, feedback) : answer.photo;
      results.push({ name, photo });
    }
  }
  return results;
}
