// The JSON API client: cookies carry the session, the X-CSRF-Token header goes on every mutating request.

export const CSRF_COOKIE = "pzone_csrf";
export const CSRF_HEADER = "X-CSRF-Token";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

let csrfToken = null;

/** An API answer that was not 2xx (status 0: the server could not be reached). */
export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export function readCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

/** Remember the session's CSRF token (from the login or /me answer); the readable cookie is the fallback. */
export function setCsrfToken(token) {
  csrfToken = token || null;
}

export function csrfTokenNow() {
  return csrfToken || readCookie(CSRF_COOKIE);
}

const STATUS_TEXT = {
  400: "The request was not accepted.",
  401: "You are not logged in, or your session has expired.",
  403: "You are not allowed to do this.",
  404: "Not found.",
  409: "This conflicts with existing data.",
  413: "The file is too large.",
  415: "This file type is not supported.",
  422: "Some of the values are not valid.",
  429: "Too many attempts; wait a moment and try again.",
};

function fieldName(loc) {
  const parts = (Array.isArray(loc) ? loc : []).filter((p) => !["body", "query", "path", "form"].includes(p));
  return parts.length ? String(parts[parts.length - 1]) : "";
}

function capitalize(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

/** The message to show for an error answer: FastAPI's ``detail`` (a string, ``{code, reason}`` or a 422 list). */
export function errorMessage(status, body, rawText = "") {
  const detail = body && typeof body === "object" ? body.detail : undefined;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail
      .map((item) => {
        const field = fieldName(item && item.loc);
        const msg = String((item && (item.msg || item.reason)) || "invalid value");
        const sentence = msg + (/[.!?]$/.test(msg) ? "" : ".");
        // "password must be …" already names its field; "Field required" does not.
        if (!field || msg.toLowerCase().startsWith(field.toLowerCase())) return capitalize(sentence);
        return `${capitalize(field)}: ${sentence}`;
      })
      .join(" ");
  }
  if (detail && typeof detail === "object") {
    const reason = detail.reason || detail.message || detail.msg;
    if (reason) return capitalize(String(reason)) + (/[.!?]$/.test(reason) ? "" : ".");
  }
  // S3 answers errors in XML: <Error><Code>…</Code><Message>…</Message></Error>
  const s3 = /<Message>([^<]{1,300})<\/Message>/.exec(rawText || "");
  if (s3) return `Storage refused the upload: ${s3[1]}`;
  if (status >= 500) return `The server had a problem (${status}). Please try again later.`;
  return STATUS_TEXT[status] || `Request failed (${status}).`;
}

function parseJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

const NETWORK_ERROR = "The server could not be reached. Check your connection and try again.";

/** fetch() a JSON API route; resolves to the parsed body, rejects with an ApiError carrying a readable message. */
export async function api(path, { method = "GET", json, query, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (UNSAFE.has(method)) {
    const token = csrfTokenNow();
    if (token) headers[CSRF_HEADER] = token;
  }
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) params.set(key, String(value));
    }
    url += `?${params}`;
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body, credentials: "same-origin", signal });
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw new ApiError(0, NETWORK_ERROR);
  }
  const text = await response.text();
  const data = parseJson(text);
  if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, data, text), data);
  return data;
}

/**
 * Send a body with XMLHttpRequest so that upload progress can be shown (fetch() has no upload progress).
 * ``onProgress(fraction)`` gets 0…1. Resolves to the parsed JSON answer (or null); rejects with an ApiError.
 */
export function sendWithProgress(method, url, { headers = {}, body, onProgress, withCsrf = false } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url, true);
    for (const [key, value] of Object.entries(headers)) xhr.setRequestHeader(key, value);
    if (withCsrf) {
      const token = csrfTokenNow();
      if (token) xhr.setRequestHeader(CSRF_HEADER, token);
    }
    if (onProgress) {
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
      });
      xhr.upload.addEventListener("load", () => onProgress(1));
    }
    xhr.addEventListener("load", () => {
      const data = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, errorMessage(xhr.status, data, xhr.responseText), data));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, `Upload failed: ${NETWORK_ERROR}`)));
    xhr.addEventListener("timeout", () => reject(new ApiError(0, "Upload timed out. Try again.")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "Upload cancelled.")));
    xhr.send(body);
  });
}
