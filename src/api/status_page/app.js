// crossl-serve status page: plain JS, no dependencies. Reads the `read`-scoped API with the API key
// typed into the page (kept in localStorage) and follows the live feed /v1/ws/predictions.
'use strict';

const ROW_HEIGHT = 40; // px, keep in step with .row in app.css
const PAGE_SIZE = 1000; // devices per GET /v1/devices page
const DEVICE_REFRESH_MS = 10000;
const STATUS_REFRESH_MS = 2000;
const TIMELINE_MINUTES = 5;
const KEY_STORAGE = 'crossl.apiKey';

const state = {
  key: localStorage.getItem(KEY_STORAGE) || '',
  model: null, // manifest
  units: [], // body units in manifest order
  sensors: [], // sensor kinds in manifest order
  devices: new Map(), // id -> {id, info, latest, receivedAt, updates}
  order: [], // visible ids, sorted
  prefix: '',
  selected: null,
  history: [], // selected device's predictions, oldest first
  lastStatus: null, // {at, body}
  ws: null,
  wsRetryMs: 1000,
  renderQueued: false,
  listGeneration: 0, // a newer listing (another prefix) makes older ones moot
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function showBanner(text) {
  const b = $('banner');
  b.textContent = text || '';
  b.hidden = !text;
}

async function api(path) {
  const headers = state.key ? { authorization: 'Bearer ' + state.key } : {};
  const res = await fetch(path, { headers });
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const msg = (body && body.error) || res.statusText;
    if (res.status === 401 || res.status === 403) {
      showBanner('API key refused (' + res.status + '): ' + msg + '. Enter a key with the read scope above.');
    }
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return body;
}

// ---- model: units x sensors grid ------------------------------------------------------------

function modalityPlace(m) {
  // Manifest `unit`/`sensor`, else split "unit_sensor" names.
  if (m.unit && m.sensor) return [m.unit, m.sensor];
  const i = m.name.lastIndexOf('_');
  return i > 0 ? [m.name.slice(0, i), m.name.slice(i + 1)] : [m.name, ''];
}

async function loadModel() {
  const body = await api('/v1/model');
  state.model = body.manifest;
  const units = [];
  const sensors = [];
  for (const m of state.model.modalities) {
    const [u, s] = modalityPlace(m);
    if (!units.includes(u)) units.push(u);
    if (!sensors.includes(s)) sensors.push(s);
  }
  state.units = units;
  state.sensors = sensors;
  $('model-name').textContent = state.model.name + ' ' + state.model.version;
}

// present / stale / absent of each modality of a device
function modalityStates(d) {
  const heard = new Map();
  for (const m of (d.info && d.info.modalities) || []) heard.set(m.name, m.stale);
  const present = d.latest ? new Set(d.latest.present_modalities || []) : null;
  const out = new Map();
  for (const m of state.model.modalities) {
    let s = 'absent';
    if (present) s = present.has(m.name) ? 'present' : (heard.has(m.name) ? 'stale' : 'absent');
    else if (heard.has(m.name)) s = heard.get(m.name) ? 'stale' : 'present';
    out.set(m.name, s);
  }
  return out;
}

function modalityGrid(d, big) {
  const states = modalityStates(d);
  const grid = el('div', big ? 'big-grid' : 'grid');
  const cols = state.units.length;
  grid.style.gridTemplateColumns = big ? '70px repeat(' + cols + ', 1fr)' : 'repeat(' + cols + ', 8px)';
  if (big) {
    grid.appendChild(el('span'));
    for (const u of state.units) grid.appendChild(el('span', 'head', u));
  }
  for (const s of state.sensors) {
    if (big) grid.appendChild(el('span', 'head', s));
    for (const u of state.units) {
      const m = state.model.modalities.find((x) => {
        const [mu, ms] = modalityPlace(x);
        return mu === u && ms === s;
      });
      const st = m ? states.get(m.name) : 'none';
      const c = el('span', 'cell ' + st);
      c.title = (m ? m.name : u + ' ' + s) + ': ' + st;
      if (m) c.dataset.modality = m.name;
      c.dataset.state = st;
      grid.appendChild(c);
    }
  }
  return grid;
}

// ---- fleet ----------------------------------------------------------------------------------

function summaryOf(p) {
  // From a feed prediction (full) or a device-list `latest` (brief).
  const confidence = p.confidence !== undefined ? p.confidence
    : (p.probabilities ? p.probabilities[p.class_index] : undefined);
  return {
    label: p.label,
    class_index: p.class_index,
    confidence,
    window_end_unix_nanos: p.window_end_unix_nanos,
    present_modalities: p.present_modalities || [],
    personalized: p.personalized === true,
    general: p.general && typeof p.general === 'object' ? p.general : null,
  };
}

function ageText(d) {
  if (!d.receivedAt) return '–';
  const s = Math.max(0, (Date.now() - d.receivedAt) / 1000);
  if (s < 60) return s.toFixed(0) + ' s';
  if (s < 3600) return (s / 60).toFixed(0) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

// Server-clock arrival of a listed prediction: the window end on the device clock, less its offset.
function arrivalOfListed(info, latest) {
  if (!latest) return null;
  const offsetNs = info && info.clock_offset_seconds ? info.clock_offset_seconds * 1e9 : 0;
  return (latest.window_end_unix_nanos - offsetNs) / 1e6;
}

async function loadDevices() {
  const generation = ++state.listGeneration;
  const seen = new Map();
  let cursor = null;
  let total = 0;
  do {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE), latest: 'true' });
    if (state.prefix) q.set('prefix', state.prefix);
    if (cursor) q.set('cursor', cursor);
    const body = await api('/v1/devices?' + q);
    if (generation !== state.listGeneration) return;
    total = body.total;
    for (const info of body.devices) {
      const old = state.devices.get(info.device_id);
      const d = old || { id: info.device_id, latest: null, receivedAt: null, updates: 0 };
      d.info = info;
      const listed = info.latest ? summaryOf(info.latest) : null;
      if (listed && (!d.latest || listed.window_end_unix_nanos > d.latest.window_end_unix_nanos)) {
        d.latest = Object.assign({}, d.latest || {}, listed,
          d.latest ? { personalized: d.latest.personalized, general: d.latest.general } : {});
        d.receivedAt = arrivalOfListed(info, info.latest);
      }
      seen.set(d.id, d);
    }
    cursor = body.next_cursor;
  } while (cursor);
  // The listing is the truth: devices gone from it (evicted, filtered out) lose their row.
  state.devices = seen;
  state.order = Array.from(seen.keys()).sort();
  $('fleet-count').textContent = '(' + total + ')';
  queueRender();
}

function onPrediction(p) {
  if (state.prefix && !p.device_id.startsWith(state.prefix)) return;
  let d = state.devices.get(p.device_id);
  if (!d) {
    d = { id: p.device_id, info: null, latest: null, receivedAt: null, updates: 0 };
    state.devices.set(d.id, d);
    const i = lowerBound(state.order, d.id);
    state.order.splice(i, 0, d.id);
    $('fleet-count').textContent = '(' + state.order.length + ')';
  }
  d.latest = summaryOf(p);
  d.receivedAt = Date.now();
  d.updates += 1;
  if (state.selected === d.id) {
    state.history.push(p);
    trimHistory();
    renderDetail();
  }
  queueRender();
}

function lowerBound(sorted, x) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    renderFleet();
  });
}

// Virtualised list: only the rows in view (plus a margin) exist in the DOM.
function renderFleet() {
  if (!state.model) return;
  const box = $('fleet');
  const spacer = $('fleet-spacer');
  spacer.style.height = state.order.length * ROW_HEIGHT + 'px';
  const first = Math.max(0, Math.floor(box.scrollTop / ROW_HEIGHT) - 5);
  const last = Math.min(state.order.length, Math.ceil((box.scrollTop + box.clientHeight) / ROW_HEIGHT) + 5);
  for (const row of Array.from(box.querySelectorAll('.row'))) row.remove();
  for (let i = first; i < last; i++) {
    const d = state.devices.get(state.order[i]);
    if (d) box.appendChild(renderRow(d, i));
  }
}

function activityCell(latest) {
  const cell = el('span', 'activity');
  if (!latest) {
    cell.appendChild(el('span', 'label muted', 'no prediction yet'));
    return cell;
  }
  cell.appendChild(el('span', 'label', latest.label));
  if (latest.personalized) {
    cell.appendChild(el('span', 'badge', 'personal'));
    if (latest.general && latest.general.label) {
      cell.appendChild(el('div', 'general', 'general: ' + latest.general.label));
    }
  }
  return cell;
}

function renderRow(d, i) {
  const row = el('div', 'row' + (state.selected === d.id ? ' selected' : ''));
  row.style.top = i * ROW_HEIGHT + 'px';
  row.dataset.deviceId = d.id;
  row.dataset.updates = String(d.updates);
  if (d.latest) row.dataset.windowEnd = String(d.latest.window_end_unix_nanos);
  row.appendChild(el('span', 'id', d.id));
  row.appendChild(activityCell(d.latest));
  const c = d.latest && d.latest.confidence !== undefined ? (100 * d.latest.confidence).toFixed(0) + ' %' : '–';
  row.appendChild(el('span', 'confidence', c));
  row.appendChild(el('span', 'age', ageText(d)));
  row.appendChild(modalityGrid(d, false));
  row.addEventListener('click', () => selectDevice(d.id));
  return row;
}

// ---- device detail --------------------------------------------------------------------------

function trimHistory() {
  const h = state.history;
  if (!h.length) return;
  const newest = h[h.length - 1].window_end_unix_nanos;
  const oldest = newest - TIMELINE_MINUTES * 60e9;
  while (h.length && h[0].window_end_unix_nanos < oldest) h.shift();
}

async function selectDevice(id) {
  state.selected = id;
  state.history = [];
  $('detail').hidden = false;
  $('detail-id').textContent = id;
  queueRender();
  try {
    const path = '/v1/devices/' + encodeURIComponent(id);
    const [info, hist] = await Promise.all([
      api(path).catch(() => null),
      api(path + '/predictions?limit=' + (TIMELINE_MINUTES * 60 * 4)).catch(() => ({ predictions: [] })),
    ]);
    if (state.selected !== id) return;
    const d = state.devices.get(id);
    if (d && info) d.info = info;
    // Keep feed predictions that arrived while the history loaded.
    const known = new Set(hist.predictions.map((p) => p.window_end_unix_nanos));
    state.history = hist.predictions.concat(state.history.filter((p) => !known.has(p.window_end_unix_nanos)));
    state.history.sort((a, b) => a.window_end_unix_nanos - b.window_end_unix_nanos);
    trimHistory();
    renderDetail();
  } catch (e) {
    $('detail-summary').textContent = 'cannot load: ' + e.message;
  }
}

function classColor(i) {
  return 'hsl(' + ((i * 137.508) % 360).toFixed(0) + ', 62%, 52%)';
}

function renderDetail() {
  const id = state.selected;
  if (!id) return;
  const d = state.devices.get(id) || { id, info: null, latest: null };
  const latest = state.history.length ? summaryOf(state.history[state.history.length - 1]) : d.latest;
  const info = d.info;
  const summary = $('detail-summary');
  summary.textContent = '';
  if (latest) {
    summary.appendChild(el('strong', 'detail-label', latest.label));
    if (latest.personalized) {
      summary.appendChild(el('span', 'badge', 'personal'));
      if (latest.general && latest.general.label) {
        summary.appendChild(el('span', 'muted', ' general: ' + latest.general.label));
      }
    }
    if (latest.confidence !== undefined) {
      summary.appendChild(el('span', '', ' ' + (100 * latest.confidence).toFixed(1) + ' %'));
    }
  } else {
    summary.appendChild(el('span', 'muted', 'no prediction yet'));
  }
  if (info) {
    const parts = [];
    if (info.clock_offset_seconds !== null && info.clock_offset_seconds !== undefined) {
      parts.push('clock offset ' + info.clock_offset_seconds.toFixed(2) + ' s');
    }
    if (info.held_by) parts.push('replica ' + info.held_by);
    if (info.stale) parts.push('no replica holds it');
    if (parts.length) summary.appendChild(el('div', 'muted', parts.join(' · ')));
  }
  const grid = $('detail-grid');
  grid.replaceWith(Object.assign(modalityGrid(Object.assign({}, d, { latest }), true), { id: 'detail-grid' }));
  renderTimeline();
  renderProbabilities();
}

function renderTimeline() {
  const canvas = $('timeline');
  const width = canvas.clientWidth || 600;
  canvas.width = width;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, width, canvas.height);
  const h = state.history;
  const legend = $('timeline-legend');
  legend.textContent = '';
  if (!h.length) {
    legend.textContent = 'no predictions in the history';
    return;
  }
  // The last TIMELINE_MINUTES at most; a shorter history fills the width (at least 30 s).
  const hop = h.length > 1 ? h[h.length - 1].window_end_unix_nanos - h[h.length - 2].window_end_unix_nanos : 1e9;
  const end = h[h.length - 1].window_end_unix_nanos + Math.max(hop, 0);
  const span = Math.min(TIMELINE_MINUTES * 60e9, Math.max(30e9, end - h[0].window_end_unix_nanos));
  const start = end - span;
  $('timeline-range').textContent = 'last ' + Math.round(span / 1e9) + ' s, ' + h.length + ' predictions';
  const x = (t) => ((t - start) / (end - start)) * width;
  const used = new Map();
  for (let i = 0; i < h.length; i++) {
    const p = h[i];
    const next = i + 1 < h.length ? h[i + 1].window_end_unix_nanos : end;
    const x0 = Math.max(0, x(p.window_end_unix_nanos));
    const x1 = Math.min(width, Math.max(x0 + 1, x(next)));
    ctx.fillStyle = classColor(p.class_index);
    ctx.fillRect(x0, 0, x1 - x0, canvas.height);
    used.set(p.class_index, p.label);
  }
  for (const [ci, label] of used) {
    const item = el('span');
    const sw = el('i');
    sw.style.background = classColor(ci);
    item.appendChild(sw);
    item.appendChild(document.createTextNode(label));
    legend.appendChild(item);
  }
}

function renderProbabilities() {
  const list = $('probabilities');
  list.textContent = '';
  const p = state.history[state.history.length - 1];
  if (!p || !p.probabilities || !state.model) return;
  const ranked = p.probabilities.map((v, i) => [state.model.classes[i] || String(i), v, i])
    .sort((a, b) => b[1] - a[1]);
  for (const [name, v, i] of ranked) {
    const li = el('li', i === p.class_index ? 'top' : '');
    li.appendChild(el('span', '', name));
    const bar = el('span', 'bar');
    bar.style.width = Math.max(0.5, 100 * v).toFixed(1) + '%';
    bar.style.background = classColor(i);
    const track = el('span', 'track');
    track.appendChild(bar);
    li.appendChild(track);
    li.appendChild(el('span', '', (100 * v).toFixed(1) + ' %'));
    list.appendChild(li);
  }
}

// ---- service health -------------------------------------------------------------------------

function ms(seconds) {
  return seconds === null || seconds === undefined ? '–' : (1000 * seconds).toFixed(seconds < 0.01 ? 2 : 1) + ' ms';
}

// Mean over the samples since the previous poll, else since start (labelled).
function recentMean(now, before, pick) {
  const a = pick(now);
  if (before) {
    const b = pick(before);
    const n = a.count - b.count;
    if (n > 0) return ms((a.sum_seconds - b.sum_seconds) / n) + ' (last ' + n + ')';
  }
  return a.mean_seconds === null ? '–' : ms(a.mean_seconds) + ' (since start)';
}

function sum(obj) {
  return Object.values(obj || {}).reduce((a, b) => a + b, 0);
}

function nonZero(obj) {
  return Object.entries(obj || {}).filter(([, v]) => v > 0).map(([k, v]) => k + ' ' + v).join(', ');
}

async function loadStatus() {
  const body = await api('/v1/status');
  const now = Date.now();
  const prev = state.lastStatus;
  const before = prev ? prev.body : null;
  const secs = prev ? (now - prev.at) / 1000 : 0;
  const rate = prev && secs > 0 ? ((body.predictions_total - before.predictions_total) / secs).toFixed(1) + ' /s' : '–';
  const L = body.latency;
  const ep = body.execution_provider
    ? body.execution_provider + (body.requested_execution_provider && body.requested_execution_provider !== body.execution_provider
      ? ' (asked ' + body.requested_execution_provider + ')' : '')
    : '–';
  const rows = [
    ['phase', body.phase + (body.error ? ': ' + body.error : '')],
    ['execution provider', ep + (body.sessions ? ', ' + body.sessions + (body.sessions === 1 ? ' session' : ' sessions') : '')],
    ['model', body.model + ' ' + body.model_version],
    ['store', body.store],
    ['devices', body.active_devices + ' / ' + body.max_devices],
    ['open streams', String(body.open_streams)],
    ['predictions', body.predictions_total + ' (' + rate + ')'],
    ['queue wait', recentMean(body, before, (s) => s.latency.queue_wait)],
    ['compute', recentMean(body, before, (s) => s.latency.inference)],
    ['end-to-end', recentMean(body, before, (s) => s.latency.end_to_end_stream)],
    ['end-to-end p50 / p99', ms(L.end_to_end_stream.p50_seconds) + ' / ' + ms(L.end_to_end_stream.p99_seconds)],
    ['one-shot p50 / p99', ms(L.end_to_end_predict.p50_seconds) + ' / ' + ms(L.end_to_end_predict.p99_seconds)],
    ['queue', (body.queue_depth.streaming || 0) + ' / ' + body.queue_capacity],
    ['windows shed', sum(body.windows_shed_total) + (nonZero(body.windows_shed_total) ? ' (' + nonZero(body.windows_shed_total) + ')' : '')],
    ['requests shed', sum(body.requests_shed_total) + (nonZero(body.requests_shed_total) ? ' (' + nonZero(body.requests_shed_total) + ')' : '')],
    ['feed skipped', String(sum(body.feed_lagged_total))],
    ['inference errors', String(body.inference_errors_total)],
  ];
  const list = $('health-list');
  list.textContent = '';
  for (const [k, v] of rows) {
    list.appendChild(el('dt', '', k));
    const dd = el('dd', '', v);
    dd.dataset.key = k;
    list.appendChild(dd);
  }
  state.lastStatus = { at: now, body };
}

// ---- live feed ------------------------------------------------------------------------------

function feedState(text, cls) {
  const p = $('feed-state');
  p.textContent = 'feed: ' + text;
  p.className = 'pill ' + (cls || '');
}

function connectFeed() {
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close();
  }
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // Browsers cannot set headers on a WebSocket: the key goes in `access_token` (docs/protocol.md).
  const q = state.key ? '?access_token=' + encodeURIComponent(state.key) : '';
  const ws = new WebSocket(scheme + '//' + location.host + '/v1/ws/predictions' + q);
  state.ws = ws;
  feedState('connecting');
  ws.onopen = () => {
    state.wsRetryMs = 1000;
    feedState('live', 'live');
  };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (_) { return; }
    if (msg.type === 'prediction') onPrediction(msg);
    else if (msg.type === 'skipped') feedState('live (skipped ' + msg.count + ')', 'live');
  };
  ws.onclose = () => {
    feedState('down, retrying', 'down');
    setTimeout(connectFeed, state.wsRetryMs);
    state.wsRetryMs = Math.min(30000, state.wsRetryMs * 2);
  };
}

// ---- start ----------------------------------------------------------------------------------

async function refreshAll() {
  try {
    if (!state.model) await loadModel();
    await Promise.all([loadDevices(), loadStatus()]);
    showBanner('');
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) showBanner('cannot reach the service: ' + e.message);
  }
}

function start() {
  $('api-key').value = state.key;
  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.key = $('api-key').value.trim();
    localStorage.setItem(KEY_STORAGE, state.key);
    state.lastStatus = null;
    refreshAll().then(connectFeed);
  });
  let filterTimer = null;
  $('filter').addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      state.prefix = $('filter').value.trim();
      $('fleet').scrollTop = 0;
      loadDevices().catch((e) => showBanner('cannot list devices: ' + e.message));
    }, 250);
  });
  $('fleet').addEventListener('scroll', queueRender, { passive: true });
  window.addEventListener('resize', queueRender);
  $('detail-close').addEventListener('click', () => {
    state.selected = null;
    $('detail').hidden = true;
    queueRender();
  });
  refreshAll().then(connectFeed);
  setInterval(() => loadDevices().catch(() => {}), DEVICE_REFRESH_MS);
  setInterval(() => loadStatus().catch(() => {}), STATUS_REFRESH_MS);
  // Ages tick even without new predictions.
  setInterval(queueRender, 1000);
}

document.addEventListener('DOMContentLoaded', start);
