/*
 * Signing in and out, and which page shows (hash routing): "#/" signs in, or shows the new-job
 * form and the jobs; "#/jobs/<id>" follows one job. The token lives in sessionStorage only, and
 * is never put in a URL.
 */

import { TOKEN_KEY, api, describe, onTokenRefused, token } from './api.js';
import { remember } from './catalogue.js';
import { $, navigate, setRouter, showMessage, showView } from './dom.js';
import { showHome } from './home.js';
import { showJob } from './job.js';
import { forgetAllResumes } from './uploads.js';

let page = null; // the page shown: { leave() }

function jobIdFromHash() {
  const match = /^#\/jobs\/([^/?#]+)\/?$/.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch (_) {
    return null;
  }
}

/** Shows the page the address names (the sign-in form without a token). */
export function route(focus) {
  if (page) {
    page.leave();
    page = null;
  }
  $('loading').hidden = true;
  const signedIn = Boolean(token());
  $('sign-out').hidden = !signedIn;
  if (!signedIn) {
    document.title = 'Sign in — media-worker console';
    showView('sign-in-view', focus);
    return;
  }
  const id = jobIdFromHash();
  page = id === null ? showHome(focus) : showJob(id, focus);
}

export async function signIn(event) {
  event.preventDefault();
  const input = $('token');
  const candidate = input.value.trim();
  if (!candidate) {
    showMessage('sign-in-error', 'Enter a token.');
    input.focus();
    return;
  }
  // A header can only carry printable ASCII; anything else cannot be a token of this API.
  if (!/^[\x21-\x7e]+$/.test(candidate)) {
    showMessage('sign-in-error', 'That token was not accepted: a token has no spaces or special characters.');
    input.focus();
    return;
  }
  const button = $('sign-in');
  button.disabled = true;
  showMessage('sign-in-error', '');
  let catalogue;
  try {
    // The cheapest call that needs a token (the jobs list reads every status document); its
    // answer is the catalogue the pages need anyway.
    catalogue = await api('GET', '/v1/presets', { bearer: candidate });
  } catch (err) {
    showMessage('sign-in-error', err.status === 401 ? 'That token was not accepted. Check it and try again.' : describe(err));
    input.focus();
    return;
  } finally {
    button.disabled = false;
  }
  try {
    sessionStorage.setItem(TOKEN_KEY, candidate);
  } catch (_) {
    showMessage('sign-in-error', 'This browser does not let the page keep the token (session storage is off).');
    return;
  }
  remember(catalogue);
  input.value = '';
  route(true);
}

export function signOut(message) {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    // Nothing was stored.
  }
  // Uploads to resume name files and keys: the next person on this browser needs neither.
  forgetAllResumes();
  showMessage('sign-in-error', message || '');
  if (message) route(true); // stay on the same address: signing in again returns there
  else navigate('#/');
}

setRouter(route);
onTokenRefused(signOut);
