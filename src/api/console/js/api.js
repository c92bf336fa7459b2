/* Calling the API: the token, JSON calls, and errors in plain words. */

import { isAbort } from './dom.js';
import { sentence } from './format.js';

export const TOKEN_KEY = 'media-console-token';
export const UNREACHABLE = 'The server could not be reached.';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // 0: no answer at all
    this.code = code;
  }
}

/** An error in plain words: the API's message and its code, or that nothing answered. */
export function describe(err) {
  if (err instanceof ApiError) {
    return err.status === 0 ? UNREACHABLE : `${sentence(err.message)} (code: ${err.code})`;
  }
  return sentence((err && err.message) || String(err));
}

export function errorOf(status, body) {
  const error = body && typeof body === 'object' ? body.error : null;
  if (error && typeof error.message === 'string') {
    return new ApiError(status, String(error.code || 'error'), error.message);
  }
  return new ApiError(status, `http_${status}`, `the server answered ${status}`);
}

export async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    // Not JSON (a proxy's error page): the status says enough.
  }
  return errorOf(response.status, body);
}

export const token = () => {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch (_) {
    return '';
  }
};

/** One JSON call: resolves to the parsed body (null for 204), rejects with an ApiError. */
export async function api(method, path, { body, signal, bearer } = {}) {
  const headers = { Authorization: `Bearer ${bearer === undefined ? token() : bearer}`, Accept: 'application/json' };
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(0, 'unreachable', UNREACHABLE);
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  try {
    return await response.json();
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(response.status, 'invalid_response', 'the server sent an answer this page cannot read');
  }
}

export const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

// What a refused token leads to: the session registers it (it imports the pages that call this).
let signOutHandler = () => {};

export function onTokenRefused(handler) {
  signOutHandler = handler;
}

/** A 401 after sign-in: the token was revoked or expired. Back to the sign-in form. */
export function authFailed(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOutHandler('Your token is no longer accepted. Sign in again.');
    return true;
  }
  return false;
}
