/*
 * Building and updating the page. Every string that comes from the API or the user reaches the
 * page through textContent or setAttribute on elements made with document.createElement: never
 * as markup.
 */

export const $ = (id) => document.getElementById(id);

/** An element with attributes (`text` sets textContent, `className` the class) and children. */
export function el(tag, attrs = {}, ...children) {
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

export function setText(id, text) {
  $(id).textContent = text || '';
}

/** Shows a message in a region that is hidden while it has nothing to say. */
export function showMessage(id, text) {
  const node = $(id);
  node.textContent = text || '';
  node.hidden = !text;
}

export const slug = (text) => String(text).toLowerCase().replace(/[^a-z0-9_-]+/g, '-');
export const fileName = (key) => String(key || '').split('/').filter(Boolean).pop() || String(key || '');
export const isAbort = (err) => Boolean(err) && err.name === 'AbortError';

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// The pages, by the element of each and its heading (focused when a page is shown).
const VIEWS = { 'sign-in-view': 'sign-in-heading', 'home-view': 'home-heading', job: 'job-heading' };

export function showView(id, focus) {
  for (const view of Object.keys(VIEWS)) $(view).hidden = view !== id;
  if (focus) $(VIEWS[id]).focus();
}

// Going to another page: the router registers itself (it imports the pages, so the pages cannot
// import it).
let router = () => {};

export function setRouter(route) {
  router = route;
}

/** Goes to `hash`; when it is already there, shows the page again. */
export function navigate(hash) {
  if (location.hash === hash) router(true);
  else location.hash = hash;
}
