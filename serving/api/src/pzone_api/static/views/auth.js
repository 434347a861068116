// The log-in and sign-up page (#/login, #/signup): one form, two modes.

import { api } from "../api.js";
import { errorText, h, show } from "../dom.js";
import { go, setUser } from "../session.js";

/** The form's inputs and its button; ``form`` holds them in page order. */
function authForm(signup) {
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
  return { form, error, email, password, submit };
}

/** Signs up or logs in with the form's values; on success the user's start page, else the API's reason. */
async function submitAuth(signup, { error, email, password, submit }) {
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
}

function authCard(signup, form) {
  return h(
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
  );
}

export function authView(mode) {
  const signup = mode === "signup";
  const fields = authForm(signup);
  fields.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitAuth(signup, fields);
  });
  show(authCard(signup, fields.form));
  fields.email.focus();
  return null;
}
