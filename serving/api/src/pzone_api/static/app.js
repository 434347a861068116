// P-ZONE web UI: a small single-page app with hash routes (#/login, #/signup, #/upload, #/history, #/dashboard).
// Plain ES modules, no build step. This module starts it: it restores the session, routes each hash to its view
// (views/*.js) and tears the previous view down. Every value from the API is put in the page as text, never as HTML.

import { ApiError, api } from "./api.js";
import { errorText, main, toast } from "./dom.js";
import { currentUser, go, setRouter, setUser } from "./session.js";
import { authView } from "./views/auth.js";
import { dashboardView } from "./views/dashboard.js";
import { historyView } from "./views/history.js";
import { uploadView } from "./views/upload.js";

// Each route: its view (called with the route's name and the hash's query; it may return its teardown) and title.
const ROUTES = {
  login: { view: authView, title: "Log in" },
  signup: { view: authView, title: "Sign up" },
  upload: { view: uploadView, title: "Upload" },
  history: { view: historyView, title: "History" },
  dashboard: { view: dashboardView, title: "Dashboard" },
};

let cleanup = null; // the current view's teardown (timers, requests)

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
  const user = currentUser();
  if (!user && name !== "login" && name !== "signup") return go("#/login");
  if (user && (name === "login" || name === "signup" || name === "")) {
    return go(user.role === "operator" ? "#/dashboard" : "#/upload");
  }
  markNav(name);
  const known = Object.hasOwn(ROUTES, name) ? ROUTES[name] : null;
  if (!known) return go(user ? "#/upload" : "#/login");
  document.title = `${known.title} · P-ZONE`;
  cleanup = known.view(name, params) || null;
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

async function start() {
  setRouter(route);
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
