// The console's shell: sign-in, the navigation, and a hash router that gives each page the main
// area. Hash routes keep the console a set of static files: any host can serve it, and a reload
// or a shared link lands on the same page (never with a key in it).

import { ApiError, auth, onUnauthorized, signIn } from "./api.js";
import { fill, h } from "./dom.js";

const ROUTES = [
  [/^\/sessions$/, "sessions"],
  [/^\/sessions\/([^/]+)$/, "session"],
  [/^\/jobs\/([^/]+)$/, "job"],
  [/^\/telemetry$/, "telemetry"],
  [/^\/workers$/, "workers", "admin"],
  [/^\/workers\/([^/]+)$/, "worker", "admin"],
  [/^\/runtimes$/, "runtimes", "admin"],
  [/^\/runtimes\/([^/]+)$/, "runtime", "admin"],
  [/^\/instructions$/, "instructions", "admin"],
];

const main = document.getElementById("main");
let leave = null; // the current page's cleanup: stops its streams and timers

/** Show a message above the page (an error, or what just happened). */
export function banner(message, kind = "error") {
  const el = document.getElementById("banner");
  el.className = `banner ${kind}`;
  el.textContent = message;
  el.hidden = !message;
}

/** The message to show for a failed call, with what to do next where the API says. */
export function explain(error) {
  if (error instanceof ApiError) return `${error.message} (${error.code})`;
  return String(error?.message || error);
}

function signInPage(reason) {
  const key = h("input", {
    id: "api-key", type: "password", autocomplete: "off", spellcheck: "false",
    placeholder: "vwm_…", required: true, "aria-label": "API key",
  });
  const error = h("p", { class: "error", id: "sign-in-error", role: "alert" }, reason || "");
  const form = h(
    "form", { class: "sign-in", id: "sign-in" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste an API key. This tab keeps it until you sign out or close it; it is never put in a URL."),
    h("label", { for: "api-key" }, "API key"), key,
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const value = key.value.trim();
    try {
      auth.remember(value, await signIn(value));
    } catch (failure) {
      error.textContent = failure.status === 401
        ? `${failure.message}. Use a key \`vwm up\` printed, or make one with \`vwm key create\`.`
        : explain(failure);
      return;
    }
    key.value = "";
    if (!location.hash || location.hash === "#/signin") location.hash = "#/sessions";
    else route();
  });
  fill(main, form);
  key.focus();
}

function chrome() {
  const signedIn = Boolean(auth.key());
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  document.getElementById("who").textContent = signedIn ? `${auth.scope()} key` : "";
  for (const link of document.querySelectorAll("[data-scope=admin]")) {
    link.hidden = !auth.isAdmin();
  }
}

let navigation = 0; // which route() call is the newest

async function route() {
  const mine = ++navigation;
  if (leave) {
    leave();
    leave = null;
  }
  banner("");
  chrome();
  if (!auth.key()) {
    signInPage();
    return;
  }
  const path = (location.hash || "#/sessions").slice(1).split("?")[0];
  const found = ROUTES.map(([pattern, page, scope]) => [path.match(pattern), page, scope])
    .find(([match]) => match);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("current", path.startsWith(`/${link.dataset.nav}`));
  }
  if (!found) {
    location.hash = "#/sessions";
    return;
  }
  const [match, page, scope] = found;
  if (scope === "admin" && !auth.isAdmin()) {
    fill(main, h("p", { class: "empty" }, "This page needs an admin key."));
    return;
  }
  // Each navigation renders into a view of its own: a page still loading when the user moves on
  // fills its own, detached view, never the newer page's.
  const view = h("div", { class: "view", "data-page": page }, h("p", { class: "loading" }, "Loading…"));
  fill(main, view);
  try {
    const module = await import(`./pages/${page}.js`);
    const params = match.slice(1).map(decodeURIComponent);
    const cleanup = (await module.render(view, ...params)) || null;
    if (mine === navigation) leave = cleanup;
    else if (cleanup) cleanup(); // moved on meanwhile: stop what it started
  } catch (error) {
    if (mine === navigation) fill(view, h("p", { class: "error" }, explain(error)));
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  auth.forget();
  location.hash = "#/signin";
  route();
});
onUnauthorized.add((message) => {
  auth.forget();
  chrome();
  signInPage(`${message}. Sign in again.`);
});
window.addEventListener("hashchange", route);
route();
