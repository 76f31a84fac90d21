// The console's one script: plain JavaScript, no library. It renders the page the path names from
// the console's JSON (/console/api/...) and keeps it live with server-sent events
// (/console/live/...). Text from the facade is only ever set as text (never parsed as HTML).
'use strict';

const OUTCOMES = [
  ['answered', 'Answered'], ['no_answer', 'No answer'], ['busy', 'Busy'], ['rejected', 'Rejected'],
  ['failed', 'Failed'], ['unknown', 'Unknown'], ['in_progress', 'In progress'],
];
const WORDS = Object.fromEntries(OUTCOMES.concat([['unspecified', '–'], ['ringing', 'Ringing'], ['ended', 'Ended'],
  ['webhook', 'Webhook'], ['history', 'Call history'], ['facade', 'Facade (given up)'],
  ['advertising', 'Advertising'], ['service', 'Service']]));

// ---- small helpers ---------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    // Through the CSSOM: the CSP allows no style attribute.
    else if (k === 'style') Object.assign(node.style, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}
const main = () => document.getElementById('main');
function setMain(...children) {
  const m = main();
  m.replaceChildren(...children);
}
function zoneLabel() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
  const offset = -new Date().getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '−';
  const h = Math.floor(Math.abs(offset) / 60), m = Math.abs(offset) % 60;
  return `${zone} (UTC${sign}${h}${m ? ':' + String(m).padStart(2, '0') : ''})`;
}
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'short', timeStyle: 'medium' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });
function when(ms) { return ms === null || ms === undefined ? '–' : dateTime.format(new Date(ms)); }
function whenShort(ms) { return ms === null || ms === undefined ? '–' : timeOnly.format(new Date(ms)); }
function seconds(s) { return s === null || s === undefined ? '–' : `${s} s`; }
function word(w) { return WORDS[w] || w; }
// When dialling starts: null = as soon as created.
function start(ms) { return ms === null || ms === undefined ? 'At once' : when(ms); }
// Contacts refused before dialling, by reason, as one line of text ('' when none).
function refusedText(refused) {
  const parts = Object.entries(refused || {}).map(([r, n]) => `${r} ${n}`);
  return parts.length ? `refused: ${parts.join(', ')}` : '';
}
function setLive(text) { document.getElementById('live').textContent = text; }

async function getJson(url) {
  const res = await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  if (res.status === 401) { location.assign('/console/login'); throw new Error('sign in'); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) { const e = new Error(body.message || res.statusText); e.status = res.status; e.reason = body.reason; throw e; }
  return body;
}

function live(url, handlers) {
  const source = new EventSource(url);
  source.addEventListener('open', () => setLive('live'));
  source.addEventListener('error', () => setLive(source.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…'));
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (ev) => { setLive(`live · updated ${timeOnly.format(new Date())}`); fn(JSON.parse(ev.data)); });
  }
  window.addEventListener('pagehide', () => source.close());
  return source;
}

// ---- the outcome bar: every segment labelled, counts as text -------------------------------------------
function outcomeBar(counts, total, id) {
  const bar = el('div', { class: 'bar', role: 'img', id: id ? `${id}-bar` : null });
  const legend = el('ul', { class: 'legend', id: id ? `${id}-legend` : null });
  const parts = [];
  for (const [key, label] of OUTCOMES) {
    const n = Number(counts[key] || 0);
    if (counts[key] === undefined) continue;
    parts.push(`${label} ${n}`);
    legend.append(el('li', { class: key, 'data-outcome': key, 'data-count': n }, `${label} ${n}`));
    if (n > 0 && total > 0) {
      bar.append(el('span', { class: key, title: `${label}: ${n} of ${total}`, style: { width: `${(100 * n) / total}%` } }));
    }
  }
  bar.setAttribute('aria-label', `Outcomes of ${total} contacts: ${parts.join(', ')}`);
  return el('div', { class: 'outcomes' }, bar, legend);
}

// ---- pages --------------------------------------------------------------------------------------------
function sessionsPage() {
  document.title = 'Sessions · callbot-facade console';
  const params = new URLSearchParams(location.search);
  const campaign = el('input', { id: 'f-campaign', name: 'campaign', value: params.get('campaign') || '', size: 18 });
  const script = el('input', { id: 'f-script', name: 'script', value: params.get('script') || '', size: 18 });
  const after = el('input', { id: 'f-after', name: 'after', type: 'date', value: params.get('after') || '' });
  const form = el('form', { class: 'filters', method: 'get', action: '/console/' },
    el('div', {}, el('label', { for: 'f-campaign', text: 'Campaign id' }), campaign),
    el('div', {}, el('label', { for: 'f-script', text: 'Script id' }), script),
    el('div', {}, el('label', { for: 'f-after', text: 'Created on or after' }), after),
    el('button', { type: 'submit', text: 'Filter' }));
  const body = el('tbody', { id: 'sessions-body' });
  const table = el('table', { id: 'sessions' },
    el('caption', { class: 'muted cap', text: `Newest first. Times in ${zoneLabel()}.` }),
    el('thead', {}, el('tr', {},
      el('th', { scope: 'col', text: 'Session' }), el('th', { scope: 'col', class: 'hide-narrow', text: 'Key' }),
      el('th', { scope: 'col', class: 'hide-narrow', text: 'Script' }), el('th', { scope: 'col', class: 'hide-narrow', text: 'Purpose' }),
      el('th', { scope: 'col', text: 'Created' }), el('th', { scope: 'col', text: 'Start' }),
      el('th', { scope: 'col', class: 'num', text: 'Contacts' }), el('th', { scope: 'col', text: 'Outcomes' }),
      el('th', { scope: 'col', text: 'Finished' }))),
    body);
  const empty = el('p', { id: 'sessions-empty', class: 'muted', hidden: true,
    text: 'No session recorded here yet. Sessions created through this facade (CreateSession, CreateCampaign) appear as they start.' });
  setMain(el('h1', { text: 'Sessions' }), form, el('div', { class: 'scroll' }, table), empty);
  const q = new URLSearchParams();
  if (campaign.value) q.set('campaign', campaign.value);
  if (script.value) q.set('script', script.value);
  if (after.value) q.set('after_ms', String(new Date(`${after.value}T00:00:00`).getTime()));
  live(`/console/live/sessions?${q}`, {
    sessions: (page) => {
      body.replaceChildren(...page.sessions.map((s) => {
        const chunk = /^(.*)-(\d+)$/.exec(s.key || '');
        return el('tr', { 'data-session': s.id },
          el('td', {}, el('a', { href: `/console/sessions/${encodeURIComponent(s.id)}`, text: s.name ? `${s.name} (${s.id})` : s.id })),
          el('td', { class: 'hide-narrow' }, chunk ? el('a', { href: `/console/campaigns/${encodeURIComponent(chunk[1])}`, text: s.key }) : (s.key || '–')),
          el('td', { class: 'hide-narrow', text: s.script_id || '–' }),
          el('td', { class: 'hide-narrow', 'data-purpose': s.purpose, text: s.purpose ? word(s.purpose) : '–' }),
          el('td', { text: when(s.created_ms) }),
          el('td', { 'data-start': s.start_ms === null ? '' : String(s.start_ms), text: start(s.start_ms) }),
          el('td', { class: 'num' }, String(s.contacts_total),
            refusedText(s.refused) ? el('small', { class: 'muted refused', text: refusedText(s.refused) }) : null),
          el('td', {}, outcomeBar(s.counts, Number(s.contacts_total))),
          el('td', {}, el('span', { class: `tag${s.finished ? ' final' : ''}`, text: s.finished ? 'Finished' : 'Running' })));
      }));
      empty.hidden = page.sessions.length > 0;
    },
  });
}

function sessionPage(id) {
  document.title = `Session ${id} · callbot-facade console`;
  const heading = el('h1', { text: `Session ${id}` });
  const progress = el('p', { id: 'progress', class: 'progress', 'aria-live': 'polite' });
  const barSlot = el('div', { id: 'outcome' });
  const body = el('tbody', { id: 'contacts-body' });
  const table = el('table', { id: 'contacts' },
    el('caption', { class: 'muted cap', text: `One row per contact. Times in ${zoneLabel()}.` }),
    el('thead', {}, el('tr', {},
      el('th', { scope: 'col', class: 'num', text: '#' }), el('th', { scope: 'col', text: 'Phone' }),
      el('th', { scope: 'col', text: 'State' }), el('th', { scope: 'col', text: 'Outcome' }),
      el('th', { scope: 'col', class: 'num', text: 'Attempts' }), el('th', { scope: 'col', class: 'num hide-narrow', text: 'Talk' }),
      el('th', { scope: 'col', class: 'hide-narrow', text: 'Last event' }), el('th', { scope: 'col', text: 'Final' }),
      el('th', { scope: 'col', class: 'hide-narrow', text: 'Source' }))),
    body);
  const timeline = el('ol', { id: 'timeline', class: 'timeline', 'aria-label': 'Event timeline, newest first' });
  setMain(heading, progress, barSlot, el('h2', { text: 'Contacts' }), el('div', { class: 'scroll' }, table),
    el('h2', { text: 'Event timeline' }), timeline);
  const rows = [];
  const render = (r) => {
    const finals = r.contacts.filter((c) => c.final).length;
    progress.textContent = `${finals} of ${r.contacts_total} contacts final · ${r.finished ? 'finished' : 'running'}`
      + ` · ${r.counts.unknown || 0} unknown (the provider never told) · ${r.reconciled || 0} reconciled from the call history`;
    barSlot.replaceChildren(outcomeBar(r.counts, Number(r.contacts_total), 'session'));
    r.contacts.forEach((c, i) => {
      const cells = [String(i + 1), c.phone, word(c.state), word(c.outcome), String(c.attempts), seconds(c.talk_s),
        when(c.last_event_ms), c.final ? 'Yes' : 'No', word(c.source)];
      let row = rows[i];
      if (!row) {
        row = el('tr', {}, cells.map((text, k) => el('td', { class: [0, 4, 5].includes(k) ? (k === 5 ? 'num hide-narrow' : 'num') : ([6, 8].includes(k) ? 'hide-narrow' : null), text })));
        rows[i] = row;
        body.append(row);
      } else {
        const changed = cells.some((text, k) => row.children[k].textContent !== text);
        if (changed) {
          cells.forEach((text, k) => { row.children[k].textContent = text; });
          row.classList.remove('changed'); void row.offsetWidth; row.classList.add('changed');
        }
      }
      row.dataset.phone = c.phone; row.dataset.state = c.state; row.dataset.outcome = c.outcome;
      row.dataset.final = String(c.final); row.dataset.source = c.source;
    });
  };
  getJson(`/console/api/sessions/${encodeURIComponent(id)}`).then((report) => {
    render(report);
    live(`/console/live/sessions/${encodeURIComponent(id)}`, {
      report: render,
      events: (events) => {
        for (const e of events) {
          const what = e.outcome !== 'unspecified' ? `${word(e.state)}, ${word(e.outcome)}` : word(e.state);
          const talk = e.talk_s ? ` · talk ${e.talk_s} s` : '';
          timeline.prepend(el('li', { 'data-event': e.id },
            el('time', { datetime: new Date(e.occurred_ms).toISOString(), text: whenShort(e.occurred_ms) }),
            ` · ${e.phone} · ${what}${e.attempt ? ` · attempt ${e.attempt}` : ''}${talk}`));
        }
      },
    });
  }).catch((e) => {
    setLive('–');
    setMain(heading, el('p', { id: 'not-found', class: 'error', role: 'alert',
      text: e.status === 404 ? 'Session not found: this facade has no record of it for your tenant.' : `Cannot load the session: ${e.message}` }));
  });
}

function campaignPage(id) {
  document.title = `Campaign ${id} · callbot-facade console`;
  const heading = el('h1', { text: `Campaign ${id}` });
  const slot = el('div', {});
  setMain(heading, slot);
  const load = () => getJson(`/console/api/campaigns/${encodeURIComponent(id)}`).then((c) => {
    const rows = c.chunks.map((s) => el('tr', {},
      el('td', { class: 'num', text: String(s.index) }),
      el('td', {}, el('a', { href: `/console/sessions/${encodeURIComponent(s.id)}`, text: s.id })),
      el('td', { text: when(s.created_ms) }), el('td', { text: start(s.start_ms) }),
      el('td', { class: 'num', text: String(s.contacts_total) }),
      el('td', {}, outcomeBar(s.counts, Number(s.contacts_total))),
      el('td', { text: s.finished ? 'Finished' : 'Running' })));
    slot.replaceChildren(
      el('p', { id: 'campaign-progress', class: 'progress', text: `${c.contacts_final} of ${c.contacts_total} contacts final in ${c.chunks.length} chunk(s) · ${c.finished ? 'finished' : 'running'}` }),
      outcomeBar(c.counts, Number(c.contacts_total), 'campaign'),
      el('h2', { text: 'Contacts accepted and refused' }),
      el('p', { id: 'campaign-accepted', text: `${c.contacts_total} accepted · ${c.contacts_refused} refused before dialling` }),
      Object.keys(c.refused_by_reason).length === 0 ? null : el('table', { id: 'campaign-refusals' },
        el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Refused because' }), el('th', { scope: 'col', class: 'num', text: 'Contacts' }))),
        el('tbody', {}, Object.entries(c.refused_by_reason).map(([r, n]) => el('tr', { 'data-reason': r },
          el('th', { scope: 'row', text: r }), el('td', { class: 'num', text: String(n) }))))),
      el('p', { class: 'muted', text: 'DO_NOT_CALL and FREQUENCY_CAP: the calling policy; other reasons: the provider\'s.' }),
      el('h2', { text: 'Chunks' }),
      el('div', { class: 'scroll' }, el('table', { id: 'chunks' },
        el('thead', {}, el('tr', {}, ['Chunk', 'Session', `Created (${zoneLabel()})`, 'Start', 'Contacts', 'Outcomes', 'State'].map((t) => el('th', { scope: 'col', text: t })))),
        el('tbody', {}, rows))));
  }).catch((e) => {
    slot.replaceChildren(el('p', { class: 'error', role: 'alert', text: e.status === 404 ? 'No session of this campaign is recorded here for your tenant.' : e.message }));
  });
  load().then(() => live(`/console/live/sessions?campaign=${encodeURIComponent(id + '-')}`, { sessions: () => load() }));
}

function scriptsPage() {
  document.title = 'Scripts · callbot-facade console';
  const search = el('input', { id: 'script-search', type: 'search', placeholder: 'e.g. diem thi', size: 30 });
  const body = el('tbody', { id: 'scripts-body' });
  const count = el('p', { class: 'muted', 'aria-live': 'polite' });
  setMain(el('h1', { text: 'Scripts' }),
    el('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
      el('div', {}, el('label', { for: 'script-search', text: 'Name contains (accents and case ignored)' }), search)),
    count,
    el('div', { class: 'scroll' }, el('table', { id: 'scripts' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Name' }), el('th', { scope: 'col', text: 'Id' }),
        el('th', { scope: 'col', text: 'Variables (* required per contact)' }))),
      body)));
  let timer = null, seq = 0;
  const load = () => {
    const mine = ++seq;
    getJson(`/console/api/scripts?q=${encodeURIComponent(search.value)}`).then((r) => {
      if (mine !== seq) return;
      count.textContent = `${r.scripts.length} script(s)`;
      body.replaceChildren(...r.scripts.map((s) => el('tr', { 'data-script': s.id },
        el('td', { text: s.name }), el('td', {}, el('code', { text: s.id })),
        el('td', { text: s.variables.map((v) => `${v.field_code}${v.required ? '*' : ''}${v.field_name ? ` (${v.field_name})` : ''}`).join(', ') || '–' }))));
      setLive('loaded');
    }).catch((e) => { count.textContent = `Cannot list the scripts: ${e.message}`; });
  };
  search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(load, 200); });
  load();
}

function healthPage() {
  document.title = 'Health · callbot-facade console';
  const grid = el('div', { class: 'grid', id: 'health' });
  const refusals = el('div', { id: 'refusals' });
  setMain(el('h1', { text: 'Health' }), grid, el('h2', { text: 'Contacts refused by the calling policy, by reason' }), refusals);
  const card = (title, value, note) => el('div', { class: 'card' }, el('span', { class: 'muted', text: title }), el('strong', { text: value }), note ? el('span', { class: 'muted', text: note }) : null);
  const load = () => getJson('/console/api/health').then((h) => {
    grid.replaceChildren(
      card('Upstream', h.upstream.reachable ? 'Reachable' : 'Unreachable', h.upstream.reachable ? `${h.upstream.scripts} script(s) in ${h.upstream.ms} ms` : (h.upstream.reason || '')),
      card('Event store', h.event_store_up ? 'Up' : 'Down'),
      card('Webhook deliveries', h.webhook_deliveries_per_s === null ? '–' : `${h.webhook_deliveries_per_s.toFixed(1)}/s`, `${h.webhook_deliveries_total} since start`),
      card('Calls shed (overload)', String(h.shed_total)));
    const reasons = Object.entries(h.refusals_by_reason || {});
    refusals.replaceChildren(reasons.length === 0 ? el('p', { class: 'muted', text: 'None recorded.' })
      : el('table', { id: 'refusals-table' }, el('tbody', {}, reasons.map(([r, n]) => el('tr', { 'data-reason': r }, el('th', { scope: 'row', text: r }), el('td', { class: 'num', text: String(n) }))))));
    setLive(`updated ${timeOnly.format(new Date())}`);
  }).catch((e) => grid.replaceChildren(el('p', { class: 'error', text: e.message })));
  load();
  // Rates need two readings: the figures (not the page) refresh every 5 s while the tab is shown.
  setInterval(() => { if (!document.hidden) load(); }, 5000);
}

// ---- start --------------------------------------------------------------------------------------------
function who() {
  getJson('/console/api/me').then((me) => {
    const slot = document.getElementById('who');
    slot.append(el('span', { text: `Tenant ${me.tenant}` }));
    if (me.login) {
      slot.append(el('form', { method: 'post', action: '/console/logout' },
        el('input', { type: 'hidden', name: 'csrf', value: me.csrf }), el('button', { type: 'submit', class: 'link', text: 'Sign out' })));
    }
    if (!me.show_phones) slot.append(el('span', { class: 'muted', text: '· phones masked' }));
  }).catch(() => {});
}

function route() {
  document.getElementById('zone').textContent = `Times in ${zoneLabel()}`;
  const path = location.pathname;
  for (const a of document.querySelectorAll('.top nav a')) {
    const href = a.getAttribute('href');
    if (href === path || (href === '/console/' && path.startsWith('/console/sessions/'))) a.setAttribute('aria-current', 'page');
  }
  who();
  let m;
  if ((m = /^\/console\/sessions\/([^/]+)$/.exec(path))) sessionPage(decodeURIComponent(m[1]));
  else if ((m = /^\/console\/campaigns\/([^/]+)$/.exec(path))) campaignPage(decodeURIComponent(m[1]));
  else if (path === '/console/scripts') scriptsPage();
  else if (path === '/console/health') healthPage();
  else sessionsPage();
}

document.addEventListener('DOMContentLoaded', route);
