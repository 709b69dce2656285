// Every /v1 request goes through `Api.request`: it sends the API key, asks for one on a 401, and turns
// the service's `{"error": {"code", "message"}}` answers into ApiError.

// sessionStorage, not localStorage: the key lives as long as the tab and is not left on the machine.
const KEY_STORAGE = "visionq.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  // `askForKey(refused)` resolves with a key the user typed, or rejects when they decline.
  constructor(askForKey) {
    this.askForKey = askForKey;
    this.prompt = null;
  }

  get key() {
    return sessionStorage.getItem(KEY_STORAGE);
  }

  // A fetch() of `path` with the key; resolves with an ok Response, rejects with ApiError.
  async request(path, init = {}) {
    for (;;) {
      const sent = this.key;
      const headers = new Headers(init.headers);
      if (sent !== null) headers.set("Authorization", `Bearer ${sent}`);
      let response;
      try {
        response = await fetch(path, { ...init, headers });
      } catch (err) {
        if (err.name === "AbortError") throw err;
        throw new ApiError(0, "network_error", "The service cannot be reached.");
      }
      if (response.ok) return response;
      const error = await errorOf(response);
      if (response.status !== 401 || error.code !== "unauthorized") throw error;
      // Requests sent before the user typed a key come back 401 too: they retry with it, unasked.
      if (this.key === sent) await this.newKey(sent !== null);
    }
  }

  async json(path, init) {
    return (await this.request(path, init)).json();
  }

  // A blob: URL of what `path` answers; <img src> and <a href> cannot send the Authorization header.
  async objectUrl(path, init) {
    return URL.createObjectURL(await (await this.request(path, init)).blob());
  }

  // One prompt however many requests were refused at once.
  newKey(refused) {
    this.prompt ??= this.askForKey(refused)
      .then((key) => sessionStorage.setItem(KEY_STORAGE, key))
      .finally(() => {
        this.prompt = null;
      });
    return this.prompt;
  }
}

async function errorOf(response) {
  const fallback = `${response.status} ${response.statusText || "error"}`.trim();
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      return new ApiError(response.status, body.error.code, body.error.message);
    }
  } catch {
    // Not JSON: a proxy's error page, say; the status line is all there is to show.
  }
  return new ApiError(response.status, "http_error", fallback);
}
