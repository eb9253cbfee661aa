// The REST API: JSON in and out, errors as ApiError, one token refresh on a 401.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0: the server could not be reached)
   * @param {string} code the platform's machine-readable code
   * @param {string} message
   * @param {Record<string, unknown>} [data]
   */
  constructor(status, code, message, data = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.data = data;
  }

  /** True when the credentials themselves were refused (not a network problem). */
  get isAuth() {
    return this.status === 401;
  }
}

export class Api {
  /**
   * @param {{onTokens?: (tokens: any) => void, onAuthLost?: () => void}} hooks
   */
  constructor(hooks = {}) {
    this.hooks = hooks;
    /** @type {any} the last TokenResponse */
    this.tokens = null;
    this._refreshing = null;
    this._refreshTimer = 0;
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {{auth?: boolean, retry?: boolean}} [options]
   */
  async call(method, path, body, { auth = true, retry = true } = {}) {
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (auth && this.tokens) headers.authorization = `Bearer ${this.tokens.access_token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch {
      throw new ApiError(0, 'network', 'The server cannot be reached.');
    }
    if (response.status === 401 && auth && retry && this.tokens?.refresh_token) {
      await this.refresh();
      return this.call(method, path, body, { auth, retry: false });
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = data?.error ?? {};
      throw new ApiError(
        response.status,
        error.code ?? 'http_error',
        error.message ?? `${response.status} ${response.statusText}`,
        error.data ?? {},
      );
    }
    return data;
  }

  get(path) {
    return this.call('GET', path);
  }

  post(path, body) {
    return this.call('POST', path, body ?? {});
  }

  /** Log in with a password; `deviceId` keeps this browser's device (and its cursors). */
  async login(username, password, deviceId) {
    const body = { username, password, device_name: deviceName() };
    if (deviceId) body.device_id = deviceId;
    try {
      this.useTokens(await this.call('POST', '/v1/auth/token', body, { auth: false }));
    } catch (error) {
      if (deviceId && error instanceof ApiError && error.code === 'unknown_device') {
        return this.login(username, password, null);
      }
      throw error;
    }
    return this.tokens;
  }

  /** Trade the refresh token for new tokens (one request at a time; the old token dies). */
  refresh(refreshToken = this.tokens?.refresh_token) {
    if (!this._refreshing) {
      this._refreshing = (async () => {
        try {
          const tokens = await this.call(
            'POST',
            '/v1/auth/refresh',
            { refresh_token: refreshToken },
            { auth: false },
          );
          this.useTokens(tokens);
          return tokens;
        } catch (error) {
          if (error instanceof ApiError && error.isAuth) this.hooks.onAuthLost?.();
          throw error;
        } finally {
          this._refreshing = null;
        }
      })();
    }
    return this._refreshing;
  }

  useTokens(tokens) {
    this.tokens = tokens;
    this.hooks.onTokens?.(tokens);
    clearTimeout(this._refreshTimer);
    // Refresh a minute before the access token lapses, so MQTT reconnects always hold a valid one.
    const delay = Math.max(10, (tokens.expires_in ?? 900) - 60) * 1000;
    this._refreshTimer = setTimeout(() => {
      this.refresh().catch(() => {
        // a network failure: the next 401 or reconnect tries again
      });
    }, delay);
  }

  stop() {
    clearTimeout(this._refreshTimer);
    this.tokens = null;
  }
}

function deviceName() {
  const agent = navigator.userAgent;
  const browser = /Firefox\//.test(agent)
    ? 'Firefox'
    : /Edg\//.test(agent)
      ? 'Edge'
      : /Chrome\//.test(agent)
        ? 'Chrome'
        : /Safari\//.test(agent)
          ? 'Safari'
          : 'Browser';
  return `Web (${browser})`;
}
