/*
 * media-worker console: the browser front-end of media-api.
 *
 * Plain ES2020, no build step and no framework: media-api embeds these files and serves them
 * under a strict Content-Security-Policy, so there is no inline code anywhere, and every string
 * that comes from the API or the user (file names, keys, ids, error texts, URLs) reaches the page
 * through textContent or setAttribute on elements made with document.createElement.
 *
 * Pages (hash routing): "#/" signs in, or shows the new-job form and the jobs; "#/jobs/<id>"
 * follows one job. The token lives in sessionStorage only, and is never put in a URL.
 */
'use strict';

(() => {
  const TOKEN_KEY = 'media-console-token';
  const RESUME_PREFIX = 'media-console-upload:';
  const JOBS_PAGE = 20;
  const ACTIVE_STATES = new Set(['queued', 'running', 'retrying']);
  const RECONNECT_MS = 2000;
  const CONFIRM_MS = 8000;
  const UNREACHABLE = 'The server could not be reached.';
  const GIF_PRESET = 'gif';
  const THUMBNAIL_PRESET = 'thumbnail';
  const STORYBOARD_PRESET = 'storyboard';
  const MAX_SECONDS = 86400;

  // ------------------------------------------------------------------------------------------
  // Small helpers

  const $ = (id) => document.getElementById(id);

  /** An element with attributes (`text` sets textContent, `className` the class) and children. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'text') node.textContent = String(value);
      else if (name === 'className') node.className = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child); // strings become text nodes
    }
    return node;
  }

  function setText(id, text) {
    $(id).textContent = text || '';
  }

  /** Shows a message in a region that is hidden while it has nothing to say. */
  function showMessage(id, text) {
    const node = $(id);
    node.textContent = text || '';
    node.hidden = !text;
  }

  const slug = (text) => String(text).toLowerCase().replace(/[^a-z0-9_-]+/g, '-');
  const fileName = (key) => String(key || '').split('/').filter(Boolean).pop() || String(key || '');
  const isAbort = (err) => Boolean(err) && err.name === 'AbortError';

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  /** The API's messages are lower-case clauses; shown as a sentence. */
  function sentence(text) {
    const trimmed = String(text || '').trim();
    if (!trimmed) return '';
    // A leading plain word is capitalised; a leading name (`input.url`, a key) is left as it is.
    const capital = /^[a-z]+(\s|,|$)/.test(trimmed) ? trimmed[0].toUpperCase() + trimmed.slice(1) : trimmed;
    return /[.!?]$/.test(capital) ? capital : capital + '.';
  }

  function formatDate(value, withSeconds = false) {
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return String(value || '');
    return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: withSeconds ? 'medium' : 'short' });
  }

  function formatBytes(bytes) {
    if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return '—';
    const units = ['B', 'kB', 'MB', 'GB', 'TB'];
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    const digits = unit === 0 || value >= 100 ? 0 : 1;
    return `${value.toFixed(digits)} ${units[unit]}`;
  }

  /** Seconds with one decimal; a still image (a thumbnail, a sprite) has none to show. */
  function formatDuration(seconds) {
    return typeof seconds === 'number' && Number.isFinite(seconds) && seconds >= 0.05 ? `${seconds.toFixed(1)} s` : '—';
  }

  function formatDimensions(video) {
    return video && video.width && video.height ? `${video.width}x${video.height}` : '—';
  }

  function percentOf(progress) {
    const value = Number(progress);
    return Number.isFinite(value) ? Math.min(100, Math.max(0, value)) : 0;
  }

  /** A URL the API returned, if it is http(s): never a `javascript:` or other scheme. */
  function safeUrl(url) {
    if (typeof url !== 'string') return null;
    try {
      const parsed = new URL(url, location.href);
      return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  function sameOrigin(url) {
    try {
      return new URL(url, location.href).origin === location.origin;
    } catch (_) {
      return false;
    }
  }

  // ------------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.name = 'ApiError';
      this.status = status; // 0: no answer at all
      this.code = code;
    }
  }

  /** An error in plain words: the API's message and its code, or that nothing answered. */
  function describe(err) {
    if (err instanceof ApiError) {
      return err.status === 0 ? UNREACHABLE : `${sentence(err.message)} (code: ${err.code})`;
    }
    return sentence((err && err.message) || String(err));
  }

  function errorOf(status, body) {
    const error = body && typeof body === 'object' ? body.error : null;
    if (error && typeof error.message === 'string') {
      return new ApiError(status, String(error.code || 'error'), error.message);
    }
    return new ApiError(status, `http_${status}`, `the server answered ${status}`);
  }

  async function errorFrom(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // Not JSON (a proxy's error page): the status says enough.
    }
    return errorOf(response.status, body);
  }

  const token = () => {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  };

  /** One JSON call: resolves to the parsed body (null for 204), rejects with an ApiError. */
  async function api(method, path, { body, signal, bearer } = {}) {
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

  const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

  /** A 401 after sign-in: the token was revoked or expired. Back to the sign-in form. */
  function authFailed(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut('Your token is no longer accepted. Sign in again.');
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------------------------------------
  // Routing

  const VIEWS = { 'sign-in-view': 'sign-in-heading', 'home-view': 'home-heading', job: 'job-heading' };
  let page = null; // the page shown: { leave() }

  function showView(id, focus) {
    for (const view of Object.keys(VIEWS)) $(view).hidden = view !== id;
    if (focus) $(VIEWS[id]).focus();
  }

  function jobIdFromHash() {
    const match = /^#\/jobs\/([^/?#]+)\/?$/.exec(location.hash);
    if (!match) return null;
    try {
      return decodeURIComponent(match[1]);
    } catch (_) {
      return null;
    }
  }

  function route(focus) {
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

  /** Goes to `hash`; when it is already there, shows the page again. */
  function navigate(hash) {
    if (location.hash === hash) route(true);
    else location.hash = hash;
  }

  // ------------------------------------------------------------------------------------------
  // Signing in and out

  async function signIn(event) {
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
    try {
      // The cheapest call that needs a token (the jobs list reads every status document).
      await api('GET', '/v1/presets', { bearer: candidate });
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
    input.value = '';
    route(true);
  }

  function signOut(message) {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
      // Uploads to resume name files and keys: the next person on this browser needs neither.
      for (const key of Object.keys(localStorage)) {
        if (key.startsWith(RESUME_PREFIX)) localStorage.removeItem(key);
      }
    } catch (_) {
      // Nothing was stored.
    }
    showMessage('sign-in-error', message || '');
    if (message) route(true); // stay on the same address: signing in again returns there
    else navigate('#/');
  }

  // ------------------------------------------------------------------------------------------
  // Home: the new-job form and the jobs

  let home = null; // { signal } of the home page shown
  let presetFields = null; // [{ name, checkbox, inputs: [{ option, input, rule }] }] once loaded
  let uploading = false;

  function showHome(focus) {
    document.title = 'Jobs — media-worker console';
    showView('home-view', focus);
    const controller = new AbortController();
    home = { signal: controller.signal };
    if (!presetFields) loadPresets(controller.signal);
    loadJobs(true);
    return {
      leave() {
        // Stops an upload in progress; picking the same file again resumes it.
        controller.abort();
        home = null;
      },
    };
  }

  // ---- presets

  const OPTION_RULES = {
    start: { label: 'Start (seconds)', min: 0, max: MAX_SECONDS, hint: 'from the beginning when empty' },
    duration: { label: 'Duration (seconds)', min: 0.1, max: MAX_SECONDS, hint: 'to the end when empty' },
    time: { label: 'Time (seconds)', min: 0, max: MAX_SECONDS, hint: 'at 10 % of the length when empty' },
    max_height: { label: 'Largest short side (pixels)', min: 144, max: 4320, integer: true, hint: 'the source\'s size when empty' },
  };

  /** The rule of one option of one preset: the GIF's duration is 1 to 6 s, 2 by default. */
  function ruleFor(preset, option) {
    const rule = OPTION_RULES[option];
    if (!rule) return null;
    if (preset === GIF_PRESET && option === 'duration') return { ...rule, min: 1, max: 6, hint: '1 to 6 s; 2 when empty' };
    if (preset === THUMBNAIL_PRESET && option === 'time') return { ...rule, label: 'Time of the frame (seconds)' };
    return rule;
  }

  function optionId(preset, option) {
    if (preset === GIF_PRESET && (option === 'start' || option === 'duration')) return `gif-${option}`;
    if (preset === THUMBNAIL_PRESET && option === 'time') return 'thumbnail-time';
    return `opt-${slug(preset)}-${slug(option)}`;
  }

  async function loadPresets(signal) {
    const status = $('presets-status');
    status.className = 'muted';
    status.textContent = 'Loading the presets…';
    status.hidden = false;
    try {
      const data = await api('GET', '/v1/presets', { signal });
      renderPresets(Array.isArray(data && data.presets) ? data.presets : []);
      status.textContent = presetFields.length ? '' : 'This deployment offers no presets.';
      status.hidden = presetFields.length > 0;
    } catch (err) {
      if (isAbort(err) || authFailed(err)) return;
      status.className = 'error';
      status.textContent = `The presets could not be loaded. ${describe(err)}`;
    }
  }

  function renderPresets(presets) {
    presetFields = [];
    const box = $('presets');
    box.replaceChildren();
    for (const preset of presets) {
      if (!preset || typeof preset.name !== 'string') continue;
      const { node, field } = presetItem(preset);
      presetFields.push(field);
      box.append(node);
    }
  }

  /** A checkbox with its label, and the preset's options, shown while it is checked. */
  function presetItem(preset) {
    const name = preset.name;
    const id = `preset-${slug(name)}`;
    const checkbox = el('input', { type: 'checkbox', name: 'preset', value: name, id });
    const label = el('label', { for: id },
      el('span', { className: 'preset-name', text: name }),
      preset.description ? el('span', { className: 'preset-description', text: preset.description }) : null);
    const node = el('div', { className: 'preset' }, el('div', { className: 'check' }, checkbox, label));
    const inputs = [];
    const options = (Array.isArray(preset.options) ? preset.options : []).filter((o) => ruleFor(name, o));
    if (options.length) {
      const group = el('fieldset', { className: 'options', id: `options-${slug(name)}` },
        el('legend', { text: `Options for ${name}` }));
      for (const option of options) {
        const rule = ruleFor(name, option);
        const inputId = optionId(name, option);
        const hintId = `${inputId}-hint`;
        const input = el('input', {
          id: inputId, type: 'number', inputmode: 'decimal', min: rule.min, max: rule.max,
          step: rule.integer ? 1 : 'any', 'aria-describedby': hintId,
        });
        group.append(el('div', { className: 'field' },
          el('label', { for: inputId, text: rule.label }),
          input,
          el('span', { className: 'hint', id: hintId, text: rule.hint })));
        inputs.push({ option, input, rule });
      }
      group.hidden = true;
      checkbox.setAttribute('aria-controls', group.id);
      checkbox.addEventListener('change', () => { group.hidden = !checkbox.checked; });
      node.append(group);
    }
    return { node, field: { name, checkbox, group: node.querySelector('fieldset'), inputs } };
  }

  class FormError extends Error {
    constructor(message, field) {
      super(message);
      this.field = field;
    }
  }

  /** The outputs asked for, with the options the user filled in (and only those). */
  function chosenOutputs() {
    const outputs = [];
    for (const { name, checkbox, inputs } of presetFields || []) {
      if (!checkbox.checked) continue;
      const output = { preset: name };
      for (const { option, input, rule } of inputs) {
        const raw = input.value.trim();
        if (input.validity && input.validity.badInput) {
          throw new FormError(`${rule.label} for ${name} is not a number.`, input);
        }
        if (raw === '') continue;
        const value = Number(raw);
        if (!Number.isFinite(value) || value < rule.min || value > rule.max || (rule.integer && !Number.isInteger(value))) {
          const kind = rule.integer ? 'a whole number' : 'a number';
          throw new FormError(`${rule.label} for ${name} must be ${kind} from ${rule.min} to ${rule.max}.`, input);
        }
        output[option] = value;
      }
      outputs.push(output);
    }
    return outputs;
  }

  function syncOptionGroups() {
    for (const { checkbox, group } of presetFields || []) {
      if (group) group.hidden = !checkbox.checked;
    }
  }

  // ---- submitting a job

  function formError(message, field) {
    showMessage('new-job-error', message);
    if (field) field.focus();
  }

  function setUploadProgress(bytes, total) {
    const percent = total > 0 ? Math.floor((bytes * 100) / total) : 0;
    $('upload-progress').value = percent;
    setText('upload-progress-text', `${percent}%`);
  }

  function setBusy(busy) {
    uploading = busy;
    $('submit-job').disabled = busy;
    $('new-job-form').setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  async function submitJob(event) {
    event.preventDefault();
    if (uploading || !home) return;
    showMessage('new-job-error', '');
    const file = $('file').files[0] || null;
    const url = $('url').value.trim();
    if (file && url) return formError('Choose a file or enter a URL, not both.', $('url'));
    if (!file && !url) return formError('Choose a file to upload, or enter the URL of a file to fetch.', $('file'));
    if (file && file.size === 0) return formError('That file is empty.', $('file'));
    if (!presetFields) return formError('The presets are not loaded yet; try again in a moment.', null);
    let outputs;
    try {
      outputs = chosenOutputs();
    } catch (err) {
      if (err instanceof FormError) return formError(err.message, err.field);
      throw err;
    }
    if (!outputs.length) {
      return formError('Choose at least one output.', presetFields.length ? presetFields[0].checkbox : null);
    }

    const { signal } = home;
    setBusy(true);
    try {
      let input;
      if (file) {
        setUploadProgress(0, file.size);
        const uploaded = await uploadFile(file, signal);
        input = { key: uploaded.key };
        setText('upload-status', 'Upload complete. Starting the job…');
      } else {
        input = { url };
        setText('upload-status', 'Starting the job…');
      }
      const job = await api('POST', '/v1/jobs', { body: { input, outputs }, signal });
      resetNewJobForm();
      navigate(`#/jobs/${encodeURIComponent(job.job_id)}`);
    } catch (err) {
      if (isAbort(err)) {
        setText('upload-status', 'The upload was paused. Pick the same file and submit again to resume it.');
      } else if (!authFailed(err)) {
        setText('upload-status', '');
        formError(describe(err), null);
      }
    } finally {
      setBusy(false);
    }
  }

  function resetNewJobForm() {
    $('new-job-form').reset();
    syncOptionGroups();
    setUploadProgress(0, 0);
    setText('upload-status', '');
    showMessage('new-job-error', '');
  }

  // ---- multipart, resumable uploads

  const resumeKeyOf = (file) => RESUME_PREFIX + JSON.stringify([file.name, file.size, file.lastModified]);

  function readResume(key) {
    try {
      const value = JSON.parse(localStorage.getItem(key) || 'null');
      if (value && typeof value.upload_id === 'string' && typeof value.key === 'string'
        && Number.isSafeInteger(value.part_size) && value.part_size > 0) {
        return value;
      }
    } catch (_) {
      // Unreadable or no storage: start afresh.
    }
    return null;
  }

  function saveResume(key, upload) {
    try {
      localStorage.setItem(key, JSON.stringify(upload));
    } catch (_) {
      // Storage full or off: the upload works, it just cannot be resumed after a reload.
    }
  }

  function forgetResume(key) {
    try {
      localStorage.removeItem(key);
    } catch (_) {
      // Nothing was stored.
    }
  }

  const uploadPath = (upload, rest = '') =>
    `/v1/multipart-uploads/${encodeURIComponent(upload.upload_id)}${rest}?key=${encodeURIComponent(upload.key)}`;

  const partCount = (size, partSize) => Math.max(1, Math.ceil(size / partSize));
  const partLength = (size, partSize, n) => Math.min(partSize, size - (n - 1) * partSize);

  /** A plain `type/subtype` as the API accepts it, or the generic binary type. */
  function contentTypeOf(file) {
    const type = String(file.type || '').split(';')[0].trim();
    return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(type) ? type : 'application/octet-stream';
  }

  /** Uploads a file in parts, resuming an upload of the same file begun before a reload. */
  async function uploadFile(file, signal) {
    const resumeKey = resumeKeyOf(file);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await uploadOnce(file, resumeKey, signal);
      } catch (err) {
        // The remembered upload was completed, aborted or swept meanwhile: start a new one, once.
        if (err instanceof ApiError && err.status === 404 && attempt === 1) {
          forgetResume(resumeKey);
          continue;
        }
        throw err;
      }
    }
  }

  async function uploadOnce(file, resumeKey, signal) {
    let upload = readResume(resumeKey);
    const stored = new Map(); // part number -> ETag
    if (upload) {
      const listing = await api('GET', uploadPath(upload), { signal });
      for (const part of (listing && listing.parts) || []) {
        const n = part.part_number;
        if (n >= 1 && part.size === partLength(file.size, upload.part_size, n)) stored.set(n, part.etag);
      }
      const count = partCount(file.size, upload.part_size);
      setText('upload-status', `Resuming the earlier upload of ${file.name}: ${stored.size} of ${count} parts are already stored.`);
    } else {
      const created = await api('POST', '/v1/multipart-uploads', {
        body: { filename: file.name, content_type: contentTypeOf(file), size: file.size },
        signal,
      });
      upload = { upload_id: created.upload_id, key: created.key, part_size: created.part_size };
      saveResume(resumeKey, upload);
      setText('upload-status', `Uploading ${file.name} (${formatBytes(file.size)})…`);
    }

    const { part_size: partSize } = upload;
    const count = partCount(file.size, partSize);
    let sent = 0;
    for (const n of stored.keys()) sent += partLength(file.size, partSize, n);
    setUploadProgress(sent, file.size);
    for (let n = 1; n <= count; n += 1) {
      if (stored.has(n)) continue;
      const start = (n - 1) * partSize;
      const blob = file.slice(start, Math.min(start + partSize, file.size));
      const signed = await api('POST', uploadPath(upload, `/parts/${n}`), { body: { size: blob.size }, signal });
      const before = sent;
      const etag = await putPart(signed, blob, signal, (loaded) => setUploadProgress(before + loaded, file.size));
      stored.set(n, etag);
      sent += blob.size;
      setUploadProgress(sent, file.size);
    }

    let parts = [...stored].sort((a, b) => a[0] - b[0]).map(([number, etag]) => ({ part_number: number, etag }));
    if (parts.some((part) => !part.etag)) {
      // A store that does not expose the ETag header: the API lists what it holds.
      const listing = await api('GET', uploadPath(upload), { signal });
      parts = ((listing && listing.parts) || []).map((p) => ({ part_number: p.part_number, etag: p.etag }));
    }
    setText('upload-status', 'Assembling the upload…');
    const info = await api('POST', uploadPath(upload, '/complete'), { body: { parts }, signal });
    forgetResume(resumeKey);
    return info;
  }

  /** PUTs one part to its signed URL (XHR, for upload progress); resolves to its ETag. */
  function putPart(signed, blob, signal, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(signed.method || 'PUT', signed.url);
      for (const [name, value] of Object.entries(signed.headers || {})) {
        // The browser sets these itself, and complains when a page tries.
        if (!/^(host|content-length)$/i.test(name)) xhr.setRequestHeader(name, String(value));
      }
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) onProgress(Math.min(e.loaded, blob.size));
      });
      xhr.addEventListener('load', () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          let etag = xhr.getResponseHeader('ETag');
          if (!etag) {
            try {
              etag = JSON.parse(xhr.responseText).etag; // the local backend's body names it too
            } catch (_) {
              etag = '';
            }
          }
          resolve(etag || '');
          return;
        }
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (_) {
          // S3 answers XML.
        }
        reject(errorOf(xhr.status, body));
      });
      xhr.addEventListener('error', () => reject(new ApiError(0, 'unreachable', UNREACHABLE)));
      xhr.addEventListener('abort', () => reject(new DOMException('The upload was stopped.', 'AbortError')));
      const stop = () => xhr.abort();
      signal.addEventListener('abort', stop, { once: true });
      xhr.addEventListener('loadend', () => signal.removeEventListener('abort', stop));
      xhr.send(blob);
    });
  }

  function fileChosen() {
    setUploadProgress(0, 0);
    const file = $('file').files[0];
    const resumable = file && readResume(resumeKeyOf(file));
    setText('upload-status', resumable ? 'Part of this file was uploaded earlier: only the rest will be sent.' : '');
  }

  // ---- the jobs list

  let listCursor = null;
  let listRequest = 0; // only the newest request's answer is shown

  async function loadJobs(reset) {
    if (!home) return;
    const request = ++listRequest;
    const params = new URLSearchParams({ limit: String(JOBS_PAGE) });
    const filter = $('state-filter').value;
    if (!reset && listCursor) params.set('cursor', listCursor);
    if (filter) params.set('state', filter);
    const more = $('load-more');
    more.disabled = true;
    setText('jobs-status', 'Loading the jobs…');
    showMessage('jobs-error', '');
    try {
      const data = await api('GET', `/v1/jobs?${params}`, { signal: home.signal });
      if (request !== listRequest) return;
      const list = $('jobs');
      if (reset) list.replaceChildren();
      for (const job of (data && data.jobs) || []) list.append(jobItem(job));
      listCursor = (data && data.next_cursor) || null;
      more.hidden = !listCursor;
      const empty = list.children.length === 0;
      setText('jobs-status', empty ? (filter ? `No ${filter} jobs.` : 'No jobs yet.') : '');
    } catch (err) {
      if (isAbort(err) || authFailed(err) || request !== listRequest) return;
      setText('jobs-status', '');
      showMessage('jobs-error', `The jobs could not be loaded. ${describe(err)}`);
    } finally {
      if (request === listRequest) more.disabled = false;
    }
  }

  function jobItem(job) {
    const state = String(job.state || '');
    const link = el('a', { className: 'job-link', href: `#/jobs/${encodeURIComponent(job.job_id)}` },
      el('span', { className: 'job-name', text: fileName(job.source_key) }),
      el('span', { className: 'job-meta' },
        el('span', { className: `state state-${slug(state)}`, text: state }),
        ACTIVE_STATES.has(state) ? el('span', { text: ` ${Math.floor(percentOf(job.progress))}%` }) : null,
        el('span', { className: 'sep', 'aria-hidden': 'true', text: ' · ' }),
        el('time', { datetime: job.created_at, text: formatDate(job.created_at) })));
    const presets = (job.outputs || []).map((o) => o.preset).filter(Boolean).join(', ');
    return el('li', { 'data-job-id': job.job_id }, link,
      presets ? el('span', { className: 'job-presets', text: presets }) : null);
  }

  // ------------------------------------------------------------------------------------------
  // The job page

  let jobPage = null; // { id, controller, signal, hls, last, outputsKey, outputsDeleted }

  function showJob(id, focus) {
    document.title = `Job ${id} — media-worker console`;
    resetJobView(id);
    showView('job', focus);
    const controller = new AbortController();
    const current = {
      id, controller, signal: controller.signal, hls: null, last: null, outputsKey: null, outputsDeleted: false,
    };
    jobPage = current;
    loadJob(current).then((job) => {
      if (job && ACTIVE_STATES.has(job.state)) follow(current);
    });
    return {
      leave() {
        controller.abort(); // ends the event stream and any request in flight
        stopMedia(current);
        disarmAll();
        if (jobPage === current) jobPage = null;
      },
    };
  }

  function resetJobView(id) {
    setText('job-id', id);
    for (const field of ['job-source', 'job-stage', 'job-attempt', 'job-live', 'job-connection', 'action-status', 'outputs-status']) {
      setText(field, '');
    }
    const state = $('job-state');
    state.textContent = '';
    state.className = 'state';
    $('job-progress').value = 0;
    setText('job-progress-text', '0%');
    setText('job-connection', 'Loading the job…');
    $('timeline').replaceChildren();
    showMessage('job-error', '');
    showMessage('action-error', '');
    $('cancel-job').hidden = true;
    $('delete-outputs').hidden = true;
    $('outputs-section').hidden = true;
    $('media').replaceChildren();
    $('outputs-body').replaceChildren();
    $('outputs').hidden = true;
    $('manifest-download').replaceChildren();
  }

  /** Reads the job view and shows it; null when it could not be read. */
  async function loadJob(current) {
    try {
      const job = await api('GET', jobPath(current.id), { signal: current.signal });
      renderJob(current, job);
      setText('job-connection', '');
      return job;
    } catch (err) {
      if (isAbort(err) || authFailed(err)) return null;
      setText('job-connection', '');
      showMessage('job-error', describe(err));
      return null;
    }
  }

  /**
   * Follows the job's Server-Sent Events until it ends. EventSource cannot send the
   * Authorization header, so the stream is read with fetch and parsed here.
   */
  async function follow(current) {
    const { signal } = current;
    while (!signal.aborted) {
      let ended = false;
      try {
        const response = await fetch(`${jobPath(current.id)}/events`, {
          headers: { Authorization: `Bearer ${token()}`, Accept: 'text/event-stream' },
          cache: 'no-store',
          signal,
        });
        if (!response.ok) throw await errorFrom(response);
        setText('job-connection', '');
        await readEvents(response.body, (name, data) => {
          if (name === 'status') {
            const job = JSON.parse(data);
            renderJob(current, job);
            ended = !ACTIVE_STATES.has(job.state);
          } else if (name === 'gone') {
            ended = true;
          }
        });
      } catch (err) {
        if (signal.aborted || isAbort(err) || authFailed(err)) return;
        if (err instanceof ApiError && (err.status === 400 || err.status === 404)) {
          showMessage('job-error', describe(err));
          return;
        }
        setText('job-connection', 'Live updates were interrupted; reconnecting…');
      }
      if (ended) break;
      // The stream ended early (an instance shutting down, a dropped link): reconnect, and the
      // current state comes first.
      await sleep(RECONNECT_MS, signal);
    }
    if (signal.aborted) return;
    // The job ended: the job view has the manifest and fresh download URLs.
    await loadJob(current);
  }

  /** Calls onEvent(name, data) for each event of a text/event-stream body. */
  async function readEvents(stream, onEvent) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let name = '';
    let data = [];
    const line = (text) => {
      if (text === '') {
        if (data.length) onEvent(name || 'message', data.join('\n'));
        name = '';
        data = [];
        return;
      }
      if (text.startsWith(':')) return; // a keep-alive comment
      const colon = text.indexOf(':');
      const field = colon === -1 ? text : text.slice(0, colon);
      let value = colon === -1 ? '' : text.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let match;
      while ((match = /\r\n|\n|\r/.exec(buffer))) {
        // A lone CR at the end may be the first half of a CRLF still on its way.
        if (match[0] === '\r' && match.index === buffer.length - 1) break;
        line(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
      }
    }
  }

  function renderJob(current, job) {
    if (current.signal.aborted || !job) return;
    const previous = current.last;
    current.last = job;
    const name = fileName(job.source_key);
    document.title = `${name} (${job.state}) — media-worker console`;
    setText('job-id', job.job_id);
    const source = $('job-source');
    source.textContent = name;
    source.setAttribute('title', String(job.source_key || ''));
    const state = $('job-state');
    state.textContent = job.state;
    state.className = `state state-${slug(job.state)}`;
    setText('job-stage', job.stage);
    const percent = job.state === 'completed' ? 100 : percentOf(job.progress);
    $('job-progress').value = percent;
    setText('job-progress-text', `${Math.floor(percent)}%`);
    setText('job-attempt', `attempt ${job.attempt} of ${job.max_attempts}`);
    renderTimeline(job.timeline || []);
    showMessage('job-error', job.error ? `${sentence(job.error.message)} (code: ${job.error.code})` : '');
    announce(previous, job);
    renderButtons(job);
    renderOutputs(current, job);
  }

  /** Tells screen readers about changes of state or stage (not every percent). */
  function announce(previous, job) {
    if (!previous) return;
    let text = '';
    if (previous.state !== job.state) {
      if (job.state === 'completed') text = 'The job completed. Its outputs are below.';
      else if (job.state === 'failed') text = `The job failed. ${job.error ? sentence(job.error.message) : ''}`;
      else if (job.state === 'cancelled') text = 'The job was cancelled.';
      else if (job.state === 'retrying') text = 'The attempt failed; the job will be tried again.';
      else text = `The job is ${job.state}, stage ${job.stage}.`;
    } else if (previous.stage !== job.stage) {
      text = `Stage: ${job.stage}.`;
    }
    if (text) setText('job-live', text.trim());
  }

  function renderTimeline(entries) {
    const items = entries.map((entry) => {
      const item = el('li', {},
        el('span', { className: 'tl-stage', text: entry.stage }),
        el('span', { className: 'sep', 'aria-hidden': 'true', text: ' · ' }),
        el('span', { className: `state state-${slug(entry.state)}`, text: entry.state }),
        el('span', { className: 'sep', 'aria-hidden': 'true', text: ' · ' }),
        el('span', { text: `attempt ${entry.attempt}` }),
        el('span', { className: 'sep', 'aria-hidden': 'true', text: ' · ' }),
        el('time', { datetime: entry.at, text: formatDate(entry.at, true) }));
      if (entry.worker) item.append(el('span', { className: 'tl-worker', text: ` on ${entry.worker}` }));
      if (entry.note) item.append(el('span', { className: 'tl-note', text: entry.note }));
      return item;
    });
    $('timeline').replaceChildren(...items);
  }

  const hasOutputs = (job) => Boolean(job.manifest && Array.isArray(job.manifest.outputs) && job.manifest.outputs.length);

  function renderButtons(job) {
    const active = ACTIVE_STATES.has(job.state);
    setButton($('cancel-job'), active);
    setButton($('delete-outputs'), !active && hasOutputs(job));
  }

  function setButton(button, shown) {
    if (!shown) disarm(button);
    button.hidden = !shown;
  }

  // ---- cancelling and deleting: a second click confirms (window.confirm would block tests
  // and is awkward with assistive technology).

  const armed = new Map(); // button -> { label, timer }

  function disarm(button) {
    const state = armed.get(button);
    if (!state) return;
    clearTimeout(state.timer);
    button.textContent = state.label;
    button.classList.remove('armed');
    armed.delete(button);
  }

  function disarmAll() {
    for (const button of [...armed.keys()]) disarm(button);
  }

  function confirmThen(button, prompt, action) {
    if (armed.has(button)) {
      disarm(button);
      action();
      return;
    }
    const label = button.textContent;
    button.textContent = prompt;
    button.classList.add('armed');
    armed.set(button, { label, timer: setTimeout(() => disarm(button), CONFIRM_MS) });
  }

  async function deleteJob(button) {
    const current = jobPage;
    if (!current) return;
    button.disabled = true;
    showMessage('action-error', '');
    setText('action-status', button.id === 'cancel-job' ? 'Cancelling the job…' : 'Deleting the outputs…');
    try {
      const outcome = await api('DELETE', jobPath(current.id), { signal: current.signal });
      if (outcome && outcome.action === 'outputs_deleted') {
        const count = Array.isArray(outcome.deleted) ? outcome.deleted.length : 0;
        current.outputsDeleted = true;
        setText('action-status', `Deleted ${count} file${count === 1 ? '' : 's'}.`);
      } else {
        setText('action-status', 'The job was cancelled.');
      }
    } catch (err) {
      if (isAbort(err) || authFailed(err)) return;
      setText('action-status', '');
      showMessage('action-error', describe(err));
    } finally {
      button.disabled = false;
    }
    await loadJob(current);
  }

  // ---- outputs

  /** Whether the outputs of a completed job were deleted: its timeline says so. */
  function outputsWereDeleted(current, job) {
    if (current.outputsDeleted) return true;
    if (job.state !== 'completed' || job.manifest) return false;
    return (job.timeline || []).some((entry) => /output file\(s\) deleted/.test(String(entry.note || '')));
  }

  function renderOutputs(current, job) {
    const deleted = outputsWereDeleted(current, job);
    const manifest = job.state === 'completed' && !deleted ? job.manifest : null;
    // Rebuilt only when the outputs change, so players keep playing through status events.
    const key = manifest && Array.isArray(manifest.outputs)
      ? JSON.stringify(manifest.outputs.map((o) => o.key))
      : `${job.state === 'completed'}:${deleted}`;
    if (key === current.outputsKey) return;
    current.outputsKey = key;

    stopMedia(current);
    $('media').replaceChildren();
    $('outputs-body').replaceChildren();
    $('manifest-download').replaceChildren();
    $('outputs').hidden = true;
    const section = $('outputs-section');
    if (deleted) {
      section.hidden = false;
      setText('outputs-status', 'Outputs deleted.');
      return;
    }
    if (!manifest || !Array.isArray(manifest.outputs)) {
      section.hidden = job.state !== 'completed';
      setText('outputs-status', job.state === 'completed' ? 'The outputs of this job are not available.' : '');
      return;
    }
    section.hidden = false;
    setText('outputs-status', '');
    const urls = new Map();
    for (const download of job.downloads || []) {
      const url = safeUrl(download && download.url);
      if (url) urls.set(download.key, url);
    }
    renderMedia(current, job, manifest.outputs, urls);
    renderOutputTable(manifest.outputs, urls);
    renderManifestLink(manifest.outputs, urls);
  }

  function figure(caption, content, note) {
    return el('figure', { className: 'output' }, content, el('figcaption', { text: caption }), note || null);
  }

  function renderMedia(current, job, outputs, urls) {
    const media = $('media');
    const source = fileName(job.source_key);
    const find = (test) => outputs.find((o) => typeof o.key === 'string' && test(o) && urls.has(o.key));

    const mp4 = find((o) => o.key.endsWith('.mp4'));
    if (mp4) {
      const note = el('p', { className: 'muted', role: 'status' });
      const video = el('video', { id: 'player-mp4', controls: true, preload: 'metadata', playsinline: true,
        'aria-label': `MP4 video (${mp4.preset}) of ${source}` });
      video.addEventListener('error', () => { note.textContent = 'This browser could not play the MP4 file; download it below.'; });
      video.setAttribute('src', urls.get(mp4.key));
      media.append(figure(`MP4 (${mp4.preset})`, video, note));
    }

    const hls = find((o) => o.key.endsWith('master.m3u8'));
    if (hls) {
      const note = el('p', { className: 'muted', role: 'status' });
      const video = el('video', { id: 'player-hls', controls: true, preload: 'metadata', playsinline: true,
        'aria-label': `HLS stream (${hls.preset}) of ${source}` });
      media.append(figure(`HLS (${hls.preset})`, video, note));
      playHls(current, video, urls.get(hls.key), note);
    }

    const gif = find((o) => o.key.endsWith('.gif'));
    if (gif) {
      media.append(figure(`GIF (${gif.preset})`,
        el('img', { id: 'output-gif', src: urls.get(gif.key), alt: `Animated GIF made from ${source}` })));
    }

    const thumbnail = find((o) => o.preset === THUMBNAIL_PRESET);
    if (thumbnail) {
      media.append(figure('Thumbnail',
        el('img', { id: 'output-thumbnail', src: urls.get(thumbnail.key), alt: `Thumbnail frame of ${source}` })));
    }

    const storyboard = outputs.find((o) => o.preset === STORYBOARD_PRESET);
    const sprite = storyboard && (storyboard.files || []).find((f) => /\.(jpe?g|png|webp)$/i.test(f) && urls.has(f));
    if (sprite) {
      media.append(figure('Storyboard',
        el('img', { id: 'output-storyboard', src: urls.get(sprite), alt: `Storyboard of ${source}: a grid of frames across its length` })));
    }
  }

  /**
   * Plays the HLS master playlist with hls.js. Only the master's URL is signed, so requests to
   * this origin (variant playlists, segments) carry the token; other origins (S3) never see it.
   */
  function playHls(current, video, url, note) {
    const Hls = window.Hls;
    if (Hls && Hls.isSupported()) {
      const hls = new Hls({
        enableWorker: false, // the CSP allows no blob workers
        xhrSetup(xhr, requestUrl) {
          if (!sameOrigin(requestUrl)) return;
          // hls.js calls this before it opens the request, and headers need an open one; it
          // leaves a request opened here as it is.
          if (xhr.readyState === XMLHttpRequest.UNSENT) xhr.open('GET', requestUrl, true);
          xhr.setRequestHeader('Authorization', `Bearer ${token()}`);
        },
      });
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (!data || !data.fatal) return;
        note.textContent = `The HLS stream could not be played${data.details ? ` (${data.details})` : ''}.`;
        hls.destroy();
        if (current.hls === hls) current.hls = null;
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      current.hls = hls;
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.setAttribute('src', url);
    } else {
      note.textContent = 'This browser cannot play HLS streams.';
    }
  }

  function stopMedia(current) {
    if (current.hls) {
      current.hls.destroy();
      current.hls = null;
    }
    for (const video of $('media').querySelectorAll('video')) {
      video.pause();
      video.removeAttribute('src');
      video.load(); // drops the connection of a download in progress
    }
  }

  function cell(label, content, header = false) {
    return el(header ? 'th' : 'td', { 'data-label': label, scope: header ? 'row' : null }, content);
  }

  function renderOutputTable(outputs, urls) {
    const body = $('outputs-body');
    for (const output of outputs) {
      const url = urls.get(output.key);
      const name = fileName(output.key);
      const link = url
        ? el('a', { className: 'download', href: url, download: name, text: name })
        : el('span', { text: 'not available' });
      body.append(el('tr', {},
        cell('Preset', String(output.preset), true),
        cell('Size', formatBytes(output.size)),
        cell('Duration', formatDuration(output.duration_seconds)),
        cell('Dimensions', formatDimensions(output.video)),
        cell('Download', link)));
    }
    $('outputs').hidden = outputs.length === 0;
  }

  /** The manifest itself, which the API lists among the downloads besides the outputs. */
  function renderManifestLink(outputs, urls) {
    const known = new Set(outputs.flatMap((o) => [o.key, ...(o.files || [])]));
    for (const [key, url] of urls) {
      if (!known.has(key) && key.endsWith('manifest.json')) {
        $('manifest-download').append('The job\'s manifest: ',
          el('a', { className: 'manifest-link', href: url, download: 'manifest.json', text: 'manifest.json' }));
        return;
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Start

  function start() {
    $('sign-in-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut(''));
    $('new-job-form').addEventListener('submit', submitJob);
    $('file').addEventListener('change', fileChosen);
    $('state-filter').addEventListener('change', () => loadJobs(true));
    $('refresh-jobs').addEventListener('click', () => loadJobs(true));
    $('load-more').addEventListener('click', () => loadJobs(false));
    $('cancel-job').addEventListener('click', (e) =>
      confirmThen(e.currentTarget, 'Click again to cancel the job', () => deleteJob($('cancel-job'))));
    $('delete-outputs').addEventListener('click', (e) =>
      confirmThen(e.currentTarget, 'Click again to delete the outputs', () => deleteJob($('delete-outputs'))));
    window.addEventListener('hashchange', () => route(true));
    route(false);
  }

  start();
})();
