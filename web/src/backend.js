// The page's one REST client. Every new token pair is saved as the device's session; the
// session module adds what happens when the session is lost (see session.js).
import { Api } from './api.js';
import { saved } from './storage.js';

export const api = new Api({ onTokens: (tokens) => saved.saveTokens(tokens) });
