/* Values as the page shows them: sentences, dates, sizes, durations, URLs it may follow. */

/** The API's messages are lower-case clauses; shown as a sentence. */
export function sentence(text) {
  const trimmed = String(text || '').trim();
  if (!trimmed) return '';
  // A leading plain word is capitalised; a leading name (`input.url`, a key) is left as it is.
  const capital = /^[a-z]+(\s|,|$)/.test(trimmed) ? trimmed[0].toUpperCase() + trimmed.slice(1) : trimmed;
  return /[.!?]$/.test(capital) ? capital : capital + '.';
}

export function formatDate(value, withSeconds = false) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value || '');
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: withSeconds ? 'medium' : 'short' });
}

export function formatBytes(bytes) {
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
export function formatDuration(seconds) {
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds >= 0.05 ? `${seconds.toFixed(1)} s` : '—';
}

export function formatDimensions(video) {
  return video && video.width && video.height ? `${video.width}x${video.height}` : '—';
}

export function percentOf(progress) {
  const value = Number(progress);
  return Number.isFinite(value) ? Math.min(100, Math.max(0, value)) : 0;
}

/** A URL the API returned, if it is http(s): never a `javascript:` or other scheme. */
export function safeUrl(url) {
  if (typeof url !== 'string') return null;
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
  } catch (_) {
    return null;
  }
}

export function sameOrigin(url) {
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch (_) {
    return false;
  }
}

/** A score (VMAF, PSNR, SSIM) with a fixed number of decimals, whatever the locale. */
export function formatScore(value, digits = 1) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '—';
}

/** A rate in kb/s, whole, grouped as the browser's locale groups numbers. */
export function formatKbps(kbps) {
  return typeof kbps === 'number' && Number.isFinite(kbps) ? Math.round(kbps).toLocaleString() : '—';
}

/** A time on a chart or in a finding: seconds with one decimal, zero included. */
export function formatSeconds(seconds) {
  return typeof seconds === 'number' && Number.isFinite(seconds) ? `${seconds.toFixed(1)} s` : '—';
}
