// HTTP calls: the dev endpoints (demo users, tokens, controller key), the
// event log, and the controller API.

export class ApiError extends Error {
  constructor(status, body) {
    const msg = body?.error?.message || body?.message || `HTTP ${status}`;
    super(msg);
    this.status = status;
    this.code = body?.error?.code;
    this.body = body;
  }
}

async function request(path, { method = "GET", bearer, body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text.slice(0, 200) };
    }
  }
  if (!res.ok || data?.ok === false) throw new ApiError(res.status, data);
  return { status: res.status, data };
}

/** `GET /dev/config` → { apiKey, users }. */
export async function devConfig() {
  return (await request("/dev/config")).data;
}

/** `GET /dev/token?sub=…` → { token, user }. */
export async function devToken(sub) {
  return (await request(`/dev/token?sub=${encodeURIComponent(sub)}`)).data;
}

/** `GET /api/v1/events?room=…` with the user's token → { events, latestOffset }. */
export async function roomEvents(token, room, { after, limit = 1000 } = {}) {
  const q = new URLSearchParams({ room, limit: String(limit) });
  if (after) q.set("after", after);
  return (await request(`/api/v1/events?${q}`, { bearer: token })).data;
}

/** `POST /api/v1/emit` with the controller key → { status, data: { offset, rooms } }. */
export async function emit(apiKey, body) {
  return request("/api/v1/emit", { method: "POST", bearer: apiKey, body });
}
