// The HTTP API as the console uses it: the key in sessionStorage, JSON calls that throw
// ApiError with the server's own message, and generate's server-sent events read from a POST
// (EventSource can only GET).

const KEY = "llmos.key";

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

async function send(method, path, body, { apiKey = key.get(), signal } = {}) {
  const headers = { Accept: "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", `Could not reach the server (${e.message}). Is it running?`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  const text = await response.text();
  try {
    const { error } = JSON.parse(text);
    return new ApiError(response.status, error.type, error.message);
  } catch {
    const detail = text.trim().slice(0, 300) || response.statusText;
    return new ApiError(response.status, "http_error", `HTTP ${response.status}: ${detail}`);
  }
}

/** A JSON call: the parsed answer, or an ApiError carrying the server's message. */
export async function call(method, path, body, options) {
  const response = await send(method, path, body, options);
  if (response.status === 204) return null; // done, nothing to say (DELETE /v1/me/key)
  try {
    return await response.json();
  } catch {
    throw new ApiError(response.status, "bad_response", `${path} did not answer JSON`);
  }
}

/** POST a body and yield each server-sent event as {event, data} (data parsed from JSON). */
export async function* events(path, body, { signal } = {}) {
  const response = await send("POST", path, body, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}
