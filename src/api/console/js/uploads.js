/* Multipart, resumable uploads: a file goes up in parts; a reload resumes where it stopped. */

import { ApiError, UNREACHABLE, api, errorOf } from './api.js';
import { $, setText } from './dom.js';
import { formatBytes } from './format.js';

const RESUME_PREFIX = 'media-console-upload:';

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

/** Forgets every upload to resume: they name files and keys the next person needs not see. */
export function forgetAllResumes() {
  try {
    for (const key of Object.keys(localStorage)) {
      if (key.startsWith(RESUME_PREFIX)) localStorage.removeItem(key);
    }
  } catch (_) {
    // Nothing was stored.
  }
}

/** Whether part of `file` was uploaded earlier. */
export const resumable = (file) => Boolean(file && readResume(resumeKeyOf(file)));

/**
 * Where an upload reports: the ids of its status line, progress bar and percentage. The
 * new-job form's by default; the job page's caption form has its own.
 */
export const FORM_UPLOAD = { status: 'upload-status', bar: 'upload-progress', percent: 'upload-progress-text' };

export function setUploadProgress(bytes, total, view = FORM_UPLOAD) {
  const percent = total > 0 ? Math.floor((bytes * 100) / total) : 0;
  $(view.bar).value = percent;
  setText(view.percent, `${percent}%`);
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

/**
 * Uploads a file in parts, resuming an upload of the same file begun before a reload; reports
 * on `view`. Resolves to the upload as the API describes it (`key` among them).
 */
export async function uploadFile(file, signal, view = FORM_UPLOAD) {
  const resumeKey = resumeKeyOf(file);
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await uploadOnce(file, resumeKey, signal, view);
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

/** The upload to continue (its stored parts) or a new one. */
async function begin(file, resumeKey, signal, view) {
  let upload = readResume(resumeKey);
  const stored = new Map(); // part number -> ETag
  if (upload) {
    const listing = await api('GET', uploadPath(upload), { signal });
    for (const part of (listing && listing.parts) || []) {
      const n = part.part_number;
      if (n >= 1 && part.size === partLength(file.size, upload.part_size, n)) stored.set(n, part.etag);
    }
    const count = partCount(file.size, upload.part_size);
    setText(view.status, `Resuming the earlier upload of ${file.name}: ${stored.size} of ${count} parts are already stored.`);
  } else {
    const created = await api('POST', '/v1/multipart-uploads', {
      body: { filename: file.name, content_type: contentTypeOf(file), size: file.size },
      signal,
    });
    upload = { upload_id: created.upload_id, key: created.key, part_size: created.part_size };
    saveResume(resumeKey, upload);
    setText(view.status, `Uploading ${file.name} (${formatBytes(file.size)})…`);
  }
  return { upload, stored };
}

async function uploadOnce(file, resumeKey, signal, view) {
  const { upload, stored } = await begin(file, resumeKey, signal, view);
  const { part_size: partSize } = upload;
  const count = partCount(file.size, partSize);
  let sent = 0;
  for (const n of stored.keys()) sent += partLength(file.size, partSize, n);
  setUploadProgress(sent, file.size, view);
  for (let n = 1; n <= count; n += 1) {
    if (stored.has(n)) continue;
    const start = (n - 1) * partSize;
    const blob = file.slice(start, Math.min(start + partSize, file.size));
    const signed = await api('POST', uploadPath(upload, `/parts/${n}`), { body: { size: blob.size }, signal });
    const before = sent;
    const etag = await putPart(signed, blob, signal, (loaded) => setUploadProgress(before + loaded, file.size, view));
    stored.set(n, etag);
    sent += blob.size;
    setUploadProgress(sent, file.size, view);
  }

  let parts = [...stored].sort((a, b) => a[0] - b[0]).map(([number, etag]) => ({ part_number: number, etag }));
  if (parts.some((part) => !part.etag)) {
    // A store that does not expose the ETag header: the API lists what it holds.
    const listing = await api('GET', uploadPath(upload), { signal });
    parts = ((listing && listing.parts) || []).map((p) => ({ part_number: p.part_number, etag: p.etag }));
  }
  setText(view.status, 'Assembling the upload…');
  const info = await api('POST', uploadPath(upload, '/complete'), { body: { parts }, signal });
  forgetResume(resumeKey);
  return info;
}

/** The ETag of a stored part: its header, or the local backend's body, which names it too. */
function etagOf(xhr) {
  const etag = xhr.getResponseHeader('ETag');
  if (etag) return etag;
  try {
    return JSON.parse(xhr.responseText).etag || '';
  } catch (_) {
    return '';
  }
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
        resolve(etagOf(xhr));
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
