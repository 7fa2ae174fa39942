// The console's only way to data: the public API on this origin, with the key this browser tab
// holds. The key lives in sessionStorage (gone when the tab closes, never sent anywhere but the
// Authorization header, never in a URL), so scopes, errors and limits are the API's own.

const KEY = "vwm.apiKey";
const SCOPE = "vwm.scope";

export class ApiError extends Error {
  /** `details` is the error body's own (e.g. a 422's `errors: [{field, problem}]`). */
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const auth = {
  key: () => sessionStorage.getItem(KEY),
  scope: () => sessionStorage.getItem(SCOPE),
  isAdmin: () => sessionStorage.getItem(SCOPE) === "admin",
  remember(key, scope) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(SCOPE, scope);
  },
  forget() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(SCOPE);
  },
};

/** Listeners told when the API refuses the key (revoked while signed in): the app signs out. */
export const onUnauthorized = new Set();

export function headers(key = auth.key(), extra = {}) {
  return { Authorization: `Bearer ${key}`, ...extra };
}

/** The JSON answer of `method path`, or an ApiError with the API's code and message. */
export async function api(path, { method = "GET", body, query, key, signal, raw = false } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  const init = { method, headers: headers(key), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", "The control plane did not answer: is `vwm up` running?");
  }
  if (!response.ok) throw await errorOf(response, key);
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

export async function errorOf(response, key) {
  let code = `http_${response.status}`;
  let message = response.statusText || `HTTP ${response.status}`;
  let details = {};
  try {
    const body = await response.json();
    code = body.error?.code || body.code || code;
    message = body.error?.message || body.message || message;
    details = body.error?.details || {};
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401 && key === undefined) {
    for (const listener of onUnauthorized) listener(message);
  }
  return new ApiError(response.status, code, message, details);
}

/** Check a key and find its scope: any key lists sessions; only an admin key reads settings. */
export async function signIn(key) {
  await api("/v1/sessions", { query: { limit: 1 }, key });
  try {
    await api("/v1/admin/settings", { key });
    return "admin";
  } catch (error) {
    if (error.status === 403) return "client";
    throw error;
  }
}

/** Every page of a cursor-paged list (`items`, `next_cursor`), up to `max` items. */
export async function all(path, query = {}, max = 500) {
  const items = [];
  let cursor = null;
  do {
    const page = await api(path, { query: { ...query, cursor, limit: Math.min(500, max) } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}
