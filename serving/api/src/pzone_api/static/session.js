// Who is logged in (the top bar shows it) and the one way to move to another page. The views import this module;
// the router in app.js registers itself here, so that no view imports app.js.

import { ApiError, setCsrfToken } from "./api.js";
import { toast } from "./dom.js";

let user = null;
let router = () => {};

export function currentUser() {
  return user;
}

/** Logs a user in (with the CSRF token of their session) or out (null), and shows or hides what only they see. */
export function setUser(next, csrfToken) {
  user = next;
  setCsrfToken(next ? csrfToken : null);
  const operator = Boolean(next && next.role === "operator");
  document.getElementById("nav").hidden = !next;
  document.getElementById("account").hidden = !next;
  document.getElementById("nav-dashboard").hidden = !operator;
  document.getElementById("account-email").textContent = next ? next.email : "";
  document.body.classList.toggle("is-operator", operator);
}

/** The function that shows the page of the current hash; app.js sets it at start. */
export function setRouter(route) {
  router = route;
}

/** Goes to a hash route; the same hash again shows its page afresh (no hashchange event fires for it). */
export function go(hash) {
  if (location.hash === hash) router();
  else location.hash = hash;
}

/** Route-level handling of errors: 401 goes back to the login page, the rest is shown. */
export function handleAuthError(error) {
  if (error instanceof ApiError && error.status === 401) {
    setUser(null);
    toast("Your session has ended. Please log in again.");
    go("#/login");
    return true;
  }
  return false;
}
