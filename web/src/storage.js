// What this browser keeps across reloads: the device's session and each username's device id.
//
// `hubbub.session` holds user id, device id and refresh token (a reload is the same device and
// goes on where it was); `hubbub.devices` maps a lowercased username to its device id, reused at
// the next password login. The outbox keeps its own key (see outbox.js).

const SESSION_KEY = 'hubbub.session';
const DEVICES_KEY = 'hubbub.devices';

/** localStorage, or null where it is disabled (the page still works, without surviving a reload). */
export function browserStorage() {
  try {
    localStorage.setItem('hubbub.probe', '1');
    localStorage.removeItem('hubbub.probe');
    return localStorage;
  } catch {
    return null;
  }
}

export class SavedSession {
  /** @param {Storage|null} storage */
  constructor(storage) {
    this.storage = storage;
  }

  /** @returns {{user_id?: string, device_id?: string, refresh_token?: string, username?: string}|null} */
  get() {
    return this._read(SESSION_KEY);
  }

  /** New tokens from the API: the refresh token rotates with each of them. */
  saveTokens(tokens) {
    this._write(SESSION_KEY, {
      ...this.get(),
      user_id: tokens.user_id,
      device_id: tokens.device_id,
      refresh_token: tokens.refresh_token,
    });
  }

  saveUsername(username) {
    this._write(SESSION_KEY, { ...this.get(), username });
  }

  /** Signed out: only the username stays, to prefill the login form. */
  forget() {
    const saved = this.get();
    this._write(SESSION_KEY, saved?.username ? { username: saved.username } : null);
  }

  /** The device this browser last used for `username`, if any. */
  deviceFor(username) {
    return (this._read(DEVICES_KEY) ?? {})[username.toLowerCase()] ?? null;
  }

  rememberDevice(username, deviceId) {
    const devices = this._read(DEVICES_KEY) ?? {};
    devices[username.toLowerCase()] = deviceId;
    this._write(DEVICES_KEY, devices);
  }

  _read(key) {
    try {
      return JSON.parse(this.storage?.getItem(key) ?? 'null');
    } catch {
      return null;
    }
  }

  _write(key, value) {
    try {
      if (value === null) this.storage?.removeItem(key);
      else this.storage?.setItem(key, JSON.stringify(value));
    } catch {
      // quota exceeded: nothing to do
    }
  }
}

export const storage = browserStorage();
export const saved = new SavedSession(storage);
