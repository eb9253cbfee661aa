// Errors shown to the reader: the platform's ApiError in words, anything else logged.
import { ApiError } from './api.js';
import { byId } from './dom.js';

/** Show `error` in the element `id` (an error line with role=alert). */
export function showError(id, error) {
  byId(id).textContent = error instanceof ApiError ? friendly(error) : 'Something went wrong.';
  if (!(error instanceof ApiError)) console.error(error);
}

/** An ApiError as a sentence for the reader. */
export function friendly(error) {
  switch (error.code) {
    case 'bad_credentials':
      return 'Wrong username or password.';
    case 'username_taken':
      return 'That username is taken.';
    case 'network':
      return 'Cannot reach Hubbub. Check your connection.';
    case 'rate_limited':
      return 'Too many attempts. Try again in a minute.';
    default:
      return error.message;
  }
}
