/* kago serve's dashboard: reads /dash/events (Server-Sent Events, one a second) and posts the operator's
 * actions with the session's CSRF header. No build step, no framework: Chart.js for the plots. */
'use strict';

const $ = (id) => document.getElementById(id);
const MAX_POINTS = 900; /* 15 minutes of live seconds */
let csrf = '';
let auth = '';
let source = null;
const charts = {};
window.kagoCharts = charts; /* (for tests and the curious) */

function show(id, on) { $(id).classList.toggle('hidden', !on); }

function message(text, bad) {
  const m = $('msg');
  m.textContent = text;
  m.classList.toggle('err', !!bad);
  show('msg', true);
  clearTimeout(message.t);
  message.t = setTimeout(() => show('msg', false), 8000);
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function fmtBytes(n) {
  if (!n) return '0';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (n >= 10 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + u[i];
}

function fmtMs(ms) {
  if (!ms) return '–';
  return ms < 1 ? ms.toFixed(2) + ' ms' : ms < 1000 ? ms.toFixed(ms < 10 ? 1 : 0) + ' ms' : (ms / 1000).toFixed(1) + ' s';
}

function fmtAge(s) {
  if (s < 60) return s.toFixed(0) + ' s';
  if (s < 3600) return (s / 60).toFixed(0) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

/* --- actions --------------------------------------------------------------------------------------- */

async function act(url, question) {
  if (!window.confirm(question)) return;
  try {
    const r = await fetch(url, { method: 'POST', headers: { 'X-Kago-CSRF': csrf }, credentials: 'same-origin' });
    const text = await r.text();
    message(text.trim() || r.statusText, !r.ok);
  } catch (e) {
    message('request failed: ' + e, true);
  }
}

function q(params) {
  return Object.entries(params).map(([k, v]) => k + '=' + encodeURIComponent(v)).join('&');
}

/* --- plots ----------------------------------------------------------------------------------------- */

function lineChart(id, series, opts = {}) {
  const ctx = $(id).getContext('2d');
  const colors = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c'];
  charts[id] = new Chart(ctx, {
    type: opts.type || 'line',
    data: {
      labels: [],
      datasets: series.map((s, i) => ({
        label: s.label, data: [], borderColor: colors[i], backgroundColor: colors[i] + '55',
        borderWidth: 1.5, pointRadius: 0, tension: 0.2, yAxisID: s.axis || 'y',
        fill: !!s.fill,
      })),
    },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      plugins: { legend: { labels: { boxWidth: 10, font: { size: 11 } } } },
      scales: Object.assign({
        x: { ticks: { maxTicksLimit: 6, font: { size: 10 } } },
        y: { beginAtZero: true, ticks: { font: { size: 10 } } },
      }, opts.scales || {}),
    },
  });
  return charts[id];
}

/* Time labels from serve's uptime t (seconds) and its uptime now. */
function label(t, uptime) {
  return new Date(Date.now() - (uptime - t) * 1000).toLocaleTimeString();
}

function push(chart, lab, values) {
  const d = chart.data;
  d.labels.push(lab);
  values.forEach((v, i) => d.datasets[i].data.push(v));
  if (d.labels.length > MAX_POINTS) {
    d.labels.shift();
    d.datasets.forEach((ds) => ds.data.shift());
  }
}

/* The total of a chart's first series, on its canvas: data-total (a plain number for tests and scripts). */
function mark(chart) {
  const total = chart.data.datasets[0].data.reduce((a, b) => a + (b || 0), 0);
  chart.canvas.dataset.total = String(total);
  chart.canvas.dataset.points = String(chart.data.labels.length);
}

/* --- the server ------------------------------------------------------------------------------------ */

function serverCards(s) {
  const cards = [
    ['Uptime', fmtAge(s.uptime_s)], ['Apps', s.apps], ['Active apps', s.active_apps],
    ['Connections', s.connections], ['Held requests', s.held], ['Start queue', s.start_queue + ' (+' + s.starting + ' starting)'],
    ['serve memory', fmtBytes(s.rss)], ['Instances started', s.instances_started],
    ['Samples / active app', fmtBytes(s.bytes_per_active_app)],
  ];
  let html = cards.map(([k, v]) => `<div class="card"><div class="k">${k}</div><div class="v">${esc(v)}</div></div>`).join('');
  if (s.reload_error)
    html += `<div class="card bad" id="config-error"><div class="k">Configuration error (last reload)</div><div class="v">${esc(s.reload_error)}</div></div>`;
  else if (s.reloads)
    html += `<div class="card"><div class="k">Last reload</div><div class="v">ok, ${fmtAge(s.reload_ago_s)} ago</div></div>`;
  $('server-cards').innerHTML = html;
}

/* --- the overview ---------------------------------------------------------------------------------- */

const view = { offset: 0, limit: 50, q: '', active: false };

function appRow(a) {
  return `<tr data-app="${esc(a.name)}">
    <td><a href="/app/${encodeURIComponent(a.name)}">${esc(a.name)}</a></td>
    <td><span class="st st-${a.state}">${a.state}</span></td>
    <td class="num">${a.ready}/${a.instances}${a.frozen ? ' (' + a.frozen + ' frozen)' : ''}${a.pending ? ' +' + a.pending + ' held' : ''}</td>
    <td class="num rps">${a.rps}</td><td class="num">${fmtMs(a.p50_ms)}</td><td class="num">${fmtMs(a.p99_ms)}</td>
    <td class="num">${a.starts}</td><td class="num">${a.restores}</td><td class="num">${a.thaws}</td>
    <td class="num">${a.errors}</td>
    <td><button class="drain" data-app="${esc(a.name)}">Drain</button></td></tr>`;
}

function overviewEvent(ev) {
  serverCards(ev.server);
  const up = ev.server.uptime_s;
  if (ev.history) {
    for (const h of ev.history) {
      push(charts['ov-req'], label(h.t, up), [h.requests / 5, h.errors / 5]);
      push(charts['ov-conn'], label(h.t, up), [h.connections, h.held, h.instances]);
    }
  }
  const l = ev.live;
  push(charts['ov-req'], label(l.t, up), [l.requests, l.errors]);
  push(charts['ov-conn'], label(l.t, up), [l.connections, l.held, l.instances]);
  charts['ov-req'].update('none');
  charts['ov-conn'].update('none');
  mark(charts['ov-req']);
  /* one page of rows: only the rows that changed are replaced */
  const body = $('apps').tBodies[0];
  const rows = ev.rows.map(appRow);
  while (body.rows.length > rows.length) body.deleteRow(-1);
  rows.forEach((html, i) => {
    if (body.rows[i] && body.rows[i].kagoHtml === html) return;
    const t = document.createElement('tbody');
    t.innerHTML = html;
    const tr = t.rows[0];
    tr.kagoHtml = html;
    if (body.rows[i]) body.replaceChild(tr, body.rows[i]);
    else body.appendChild(tr);
  });
  const last = Math.min(ev.offset + ev.rows.length, ev.total);
  $('page').textContent = ev.total ? `${ev.offset + 1}–${last} of ${ev.total}` : 'no app';
  $('prev').disabled = ev.offset === 0;
  $('next').disabled = last >= ev.total;
}

function openOverview() {
  for (const c of ['ov-req', 'ov-conn']) if (charts[c]) { charts[c].destroy(); delete charts[c]; }
  lineChart('ov-req', [{ label: 'requests/s', fill: true }, { label: 'errors/s' }]);
  lineChart('ov-conn', [{ label: 'connections' }, { label: 'held' }, { label: 'instances' }]);
  connect('/dash/events?' + q({ offset: view.offset, limit: view.limit, q: view.q, active: view.active ? 1 : 0 }), overviewEvent);
}

function setupOverview() {
  $('crumb').textContent = 'overview';
  show('overview', true);
  let t = null;
  $('filter').addEventListener('input', () => {
    clearTimeout(t);
    t = setTimeout(() => { view.q = $('filter').value; view.offset = 0; openOverview(); }, 300);
  });
  $('active').addEventListener('change', () => { view.active = $('active').checked; view.offset = 0; openOverview(); });
  $('prev').addEventListener('click', () => { view.offset = Math.max(0, view.offset - view.limit); openOverview(); });
  $('next').addEventListener('click', () => { view.offset += view.limit; openOverview(); });
  $('apps').addEventListener('click', (e) => {
    const b = e.target.closest('button.drain');
    if (b) act('/drain?' + q({ app: b.dataset.app }), `Drain every instance of ${b.dataset.app}? Requests in flight finish; the next request starts a new instance.`);
  });
  openOverview();
}

/* --- an app ---------------------------------------------------------------------------------------- */

let appName = '';

function instRow(i) {
  const cpu = `${i.cpu_pct.toFixed(1)}%${i.cpu_limit_pct ? ' / ' + i.cpu_limit_pct + '%' : ''}`;
  const mem = `${fmtBytes(i.memory)}${i.memory_limit ? ' / ' + fmtBytes(i.memory_limit) : ''}`;
  const pct = i.memory_limit ? Math.min(100, (100 * i.memory) / i.memory_limit) : 0;
  const fz = i.state === 'frozen' ? `<button class="thaw">Thaw</button>` : i.state === 'ready' ? `<button class="freeze">Freeze</button>` : '';
  const stop = i.state === 'ready' || i.state === 'frozen' || i.state === 'starting' ? `<button class="stop">Stop</button>` : '';
  return `<tr data-instance="${esc(i.name)}" data-state="${i.state}">
    <td>${esc(i.name)}</td><td><span class="st st-${i.state}">${i.state}${i.pinned ? ' (by hand)' : ''}</span></td><td>${i.tier}</td>
    <td class="num">${fmtAge(i.age_s)}</td><td class="num">${i.served}</td><td class="num">${i.in_flight}</td>
    <td class="num">${cpu}</td><td class="num"><span class="bar" style="width:${(pct / 2).toFixed(0)}px"></span>${mem}</td>
    <td>${fz} ${stop}</td></tr>`;
}

function appEvent(ev) {
  serverCards(ev.server);
  const a = ev.app;
  if (!a) {
    $('app-cards').innerHTML = `<div class="card bad"><div class="k">App</div><div class="v">no app named ${esc(appName)}</div></div>`;
    return;
  }
  const up = ev.server.uptime_s;
  $('app-cards').innerHTML = [
    ['State', `<span class="st st-${a.state}">${a.state}</span>`], ['Hosts', esc(a.hosts.join(', ') || '(default)')],
    ['Instances', `${a.ready} ready / ${a.instances} (min ${a.min}, max ${a.max})`], ['Req/s', a.rps],
    ['p50 / p99', `${fmtMs(a.p50_ms)} / ${fmtMs(a.p99_ms)}`],
    ['Starts / restores / thaws', `${a.starts} / ${a.restores} / ${a.thaws}`], ['Errors', a.errors],
    ['Limits', `CPU ${a.cpu_limit_pct ? a.cpu_limit_pct + '%' : 'none'}, memory ${a.memory_limit ? fmtBytes(a.memory_limit) : 'none'}`],
  ].map(([k, v]) => `<div class="card"><div class="k">${k}</div><div class="v">${v}</div></div>`).join('') +
    (a.last_error ? `<div class="card bad"><div class="k">Last start failure</div><div class="v">${esc(a.last_error)}</div></div>` : '');
  const add = (s, step) => {
    const lab = label(s.t, up);
    push(charts['ap-req'], lab, [s.requests / step, s.errors / step]);
    push(charts['ap-lat'], lab, [s.p50_ms || null, s.p99_ms || null]);
    push(charts['ap-res'], lab, [s.cpu_pct, s.memory / 1048576]);
  };
  if (ev.history) for (const h of ev.history) add(h, 5);
  add(ev.live, 1);
  const c = charts['ap-cold'], h = a.cold_hist;
  c.data.labels = h.bounds_ms.map((b) => (b === null ? '> ' + h.bounds_ms[h.bounds_ms.length - 2] + ' ms' : '≤ ' + b + ' ms'));
  c.data.datasets[0].data = h.start;
  c.data.datasets[1].data = h.restore;
  const th = charts['ap-thaw'];
  th.data.labels = h.thaw_bounds_ms.map((b) => (b === null ? '> ' + h.thaw_bounds_ms[h.thaw_bounds_ms.length - 2] + ' ms' : '≤ ' + b + ' ms'));
  th.data.datasets[0].data = h.thaw;
  for (const k of ['ap-req', 'ap-lat', 'ap-res', 'ap-cold', 'ap-thaw']) charts[k].update('none');
  mark(charts['ap-req']);
  const body = $('insts').tBodies[0];
  body.innerHTML = ev.instances.map(instRow).join('');
  if (ev.log) $('log').textContent = ev.log.length ? ev.log.join('\n') : '(none)';
}

function setupApp(name) {
  appName = name;
  $('crumb').innerHTML = `/ app <b>${esc(name)}</b>`;
  document.title = `${name} · kago serve`;
  show('app', true);
  lineChart('ap-req', [{ label: 'requests/s', fill: true }, { label: 'errors/s' }]);
  lineChart('ap-lat', [{ label: 'p50 ms' }, { label: 'p99 ms' }]);
  lineChart('ap-res', [{ label: 'CPU %' }, { label: 'memory MiB', axis: 'y1' }],
    { scales: { y1: { position: 'right', beginAtZero: true, grid: { drawOnChartArea: false } } } });
  lineChart('ap-cold', [{ label: 'start (boot)' }, { label: 'restore (CRIU)' }], { type: 'bar' });
  lineChart('ap-thaw', [{ label: 'thaw' }], { type: 'bar' });
  $('drain').addEventListener('click', () => act('/drain?' + q({ app: name }),
    `Drain every instance of ${name}? Requests in flight finish; the next request starts a new instance.`));
  $('insts').addEventListener('click', (e) => {
    const b = e.target.closest('button');
    if (!b) return;
    const inst = b.closest('tr').dataset.instance;
    const verb = b.className;
    const what = { stop: `Stop instance ${inst}? It finishes its requests, then ends.`,
      freeze: `Freeze instance ${inst}? It keeps its memory and takes no CPU until a request or Thaw.`,
      thaw: `Thaw instance ${inst}?` }[verb];
    act(`/${verb}?` + q({ app: name, instance: inst }), what);
  });
  $('limits-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const p = { app: name };
    if ($('cpu').value) p.cpu = $('cpu').value;
    if ($('memory').value) p.memory = $('memory').value;
    act('/limits?' + q(p), `Change ${name}'s limits live to${p.cpu ? ' CPU ' + p.cpu : ''}${p.memory ? ' memory ' + p.memory : ''}? Running instances change now, new ones start with them (until the next reload).`);
  });
  connect('/dash/events?' + q({ app: name }), appEvent);
}

/* --- the stream ------------------------------------------------------------------------------------ */

function connect(url, onEvent) {
  if (source) source.close();
  source = new EventSource(url);
  const live = $('live');
  source.onopen = () => { live.textContent = '● live'; live.classList.add('on'); };
  source.onerror = async () => {
    live.textContent = '● reconnecting';
    live.classList.remove('on');
    /* the session ended (serve restarted, or 12 h passed): back to the login form */
    try {
      if ((await fetch('/dash/session', { credentials: 'same-origin' })).status === 401) location.reload();
    } catch (e) { /* serve is away: EventSource retries */ }
  };
  source.onmessage = (m) => {
    try { onEvent(JSON.parse(m.data)); } catch (e) { console.error(e); }
  };
}

/* --- start ----------------------------------------------------------------------------------------- */

function setupHeader() {
  show('reload', true);
  $('reload').addEventListener('click', () => act('/reload', 'Reload the configuration (the Kagofiles) now?'));
  if (auth === 'cookie') {
    show('logout', true);
    $('logout').addEventListener('click', async () => {
      await fetch('/dash/logout', { method: 'POST', headers: { 'X-Kago-CSRF': csrf } });
      location.reload();
    });
  }
}

async function start() {
  const r = await fetch('/dash/session', { credentials: 'same-origin' });
  if (r.status === 401) {
    show('login', true);
    $('login-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const lr = await fetch('/dash/login', { method: 'POST', headers: { Authorization: 'Bearer ' + $('token').value.trim() } });
      if (lr.ok) location.reload();
      else message(lr.status === 429 ? 'too many failed attempts: wait a minute' : 'wrong token', true);
    });
    return;
  }
  if (!r.ok) {
    message(`the admin API answered ${r.status}: ${await r.text()}`, true);
    return;
  }
  const sess = await r.json();
  auth = sess.auth;
  csrf = sess.csrf === '-' ? '1' : sess.csrf; /* (bearer, unix socket: any value) */
  show('server', true);
  setupHeader();
  const m = location.pathname.match(/^\/app\/(.+)$/);
  if (m) setupApp(decodeURIComponent(m[1]));
  else setupOverview();
}

/* A page left for another keeps no stream open: browsers allow 6 connections per host, and a page kept in
 * the back/forward cache would hold its stream. Back on it, it starts afresh. */
window.addEventListener('pagehide', () => { if (source) source.close(); });
window.addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });

start();
