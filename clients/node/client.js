#!/usr/bin/env node
// callbot.v1 client in Node.js: a usage example and a conformance check in one.
//
//   node client.js HOST:PORT
//
// Loads proto/callbot/v1/callbot.proto at run time with @grpc/proto-loader (no code generation), calls
// it with @grpc/grpc-js, and decodes the google.rpc.Status of a failed call (grpc-status-details-bin)
// with protobufjs. Prints one "ok ..." line per check, "FAIL ..." on a mismatch, and exits 1 if any
// check failed. CALLBOT_PROTO_ROOT points at another proto/ folder (default: this repository's).
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const { protoPath: HEALTH_PROTO } = require('grpc-health-check');

const SCRIPT_ID = '64915bc76a690c0edad14723';
const SCRIPT_NAME = 'Thông báo điểm thi'; // compared as UTF-8 bytes
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TIMEOUT_MS = 10000; // the deadline of every call
const WATCH_TIMEOUT_MS = 30000; // the deadline of the WatchCallEvents stream
// The watch check's contacts: the simulator decides by a number's last digit, ...0 is answered
// (talk 10 s), ...7 is busy.
const WATCH_PHONES = new Map([['0912345670', 'CALL_OUTCOME_ANSWERED'], ['0912345677', 'CALL_OUTCOME_BUSY']]);
const PROTO_ROOT = process.env.CALLBOT_PROTO_ROOT || path.join(__dirname, '..', '..', 'proto');

// keepCase: field names as in the .proto (script_id, not scriptId); enums as their names.
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

// google.rpc.Status and the error details it carries: the messages (and field numbers) of
// googleapis' google/rpc/status.proto and google/rpc/error_details.proto that this client reads.
// Unknown fields are skipped by the decoder, so a subset is enough.
const rpcRoot = new protobuf.Root();
protobuf.parse(`syntax = "proto3"; package google.protobuf;
  message Any { string type_url = 1; bytes value = 2; }
  message Duration { int64 seconds = 1; int32 nanos = 2; }`, rpcRoot, { keepCase: true });
protobuf.parse(`syntax = "proto3"; package google.rpc;
  message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
  message BadRequest {
    message FieldViolation { string field = 1; string description = 2; string reason = 3; }
    repeated FieldViolation field_violations = 1;
  }
  message RetryInfo { google.protobuf.Duration retry_delay = 1; }
  message RequestInfo { string request_id = 1; string serving_data = 2; }`, rpcRoot, { keepCase: true });
rpcRoot.resolveAll();
const Status = rpcRoot.lookupType('google.rpc.Status');
const DETAIL_TYPES = new Map(
  ['ErrorInfo', 'BadRequest', 'RetryInfo', 'RequestInfo'].map((n) => [
    `type.googleapis.com/google.rpc.${n}`,
    rpcRoot.lookupType(`google.rpc.${n}`),
  ]),
);

let failures = 0;

function check(cond, what, detail = '') {
  if (cond) {
    console.log(`ok ${what}`);
  } else {
    failures += 1;
    console.log(`FAIL ${what}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
  }
}

// Decodes the google.rpc.Status of a failed call (the grpc-status-details-bin trailer, which grpc-js
// hands over base64-decoded in err.metadata) and returns its ErrorInfo and BadRequest, or nulls.
// Like grpcio-status's rpc_status.from_call, a Status whose code differs from the call's is an error.
function errorDetails(err) {
  const bins = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (bins.length === 0) return { info: null, bad: null };
  const st = Status.toObject(Status.decode(bins[0]), { defaults: true });
  if (st.code !== err.code) {
    throw new Error(`grpc-status-details-bin has code ${st.code}, the call ended with ${err.code}`);
  }
  let info = null;
  let bad = null;
  for (const any of st.details) {
    const type = DETAIL_TYPES.get(any.type_url);
    if (!type) continue;
    const msg = type.toObject(type.decode(any.value), { defaults: true });
    if (type.name === 'ErrorInfo') info = msg;
    else if (type.name === 'BadRequest') bad = msg;
  }
  return { info, bad };
}

// Promise wrappers: a unary call, and a server stream collected into an array.
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + TIMEOUT_MS }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

function serverStream(client, method, request) {
  return new Promise((resolve, reject) => {
    const out = [];
    const call = client[method](request, { deadline: Date.now() + TIMEOUT_MS });
    call.on('data', (msg) => out.push(msg));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

// Runs a call expected to fail: returns its error, or null (after a FAIL line) if it succeeded.
async function expectError(what, promise) {
  try {
    await promise;
  } catch (err) {
    if (err && typeof err.code === 'number') return err;
    throw err;
  }
  check(false, what, 'call succeeded');
  return null;
}

function waitForReady(client) {
  return new Promise((resolve, reject) => {
    client.waitForReady(Date.now() + TIMEOUT_MS, (err) => (err ? reject(err) : resolve()));
  });
}

// A number without its prefix (0..., 84..., +84... compare equal).
function last9(phone) {
  return phone.replace(/\D/g, '').slice(-9);
}

// Keeps the last 3 digits of a number.
function mask(phone) {
  return phone.length <= 3 ? phone : '*'.repeat(phone.length - 3) + phone.slice(-3);
}

// google.protobuf.Timestamp (seconds as a string: longs: String) as HH:MM:SS.mmmZ.
function eventTime(ts) {
  if (!ts) return '-';
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)).toISOString().slice(11, 23) + 'Z';
}

// WatchCallEvents: a server stream that never ends by itself; replay (from_start), then live. Each
// call yields RINGING, (ANSWERED), ENDED (live hangup, no outcome), then ENDED with the outcome: the
// end-of-call record, the one to wait for. Resolves once every wanted contact's record came (and
// cancels the stream), or when the stream fails (its deadline) or ends.
function watchUntilEnded(stub, sessionId, want) {
  return new Promise((resolve) => {
    const outcomes = new Map(); // last 9 digits -> outcome of its end-of-call record
    const problems = [];
    let n = 0;
    let done = false;
    const finish = (problem) => {
      if (done) return;
      done = true;
      if (problem) problems.push(problem);
      call.cancel(); // the stream would go on with live events: cancel it (its 'error' is then CANCELLED)
      resolve({ outcomes, problems, n });
    };
    const call = stub.WatchCallEvents({ session_id: sessionId, from_start: true },
      { deadline: Date.now() + WATCH_TIMEOUT_MS });
    call.on('data', ({ event: ev }) => {
      if (done) return;
      n += 1;
      console.log(`  event ${eventTime(ev.occurred_at)} ${mask(ev.phone)} ${ev.state.replace(/^CALL_STATE_/, '')} `
        + `${ev.outcome.replace(/^CALL_OUTCOME_/, '')}`);
      if (ev.session_id !== sessionId) problems.push(`event ${ev.id} of session ${JSON.stringify(ev.session_id)}`);
      if (ev.state === 'CALL_STATE_ENDED' && ev.outcome !== 'CALL_OUTCOME_UNSPECIFIED') {
        const key = last9(ev.phone);
        if (!want.has(key)) problems.push(`end-of-call record of unknown number ${JSON.stringify(ev.phone)}`);
        else if (outcomes.has(key)) problems.push(`second end-of-call record for ${JSON.stringify(ev.phone)}`);
        else outcomes.set(key, ev.outcome);
      }
      if (outcomes.size === want.size) finish();
    });
    call.on('error', (err) => finish(`${grpc.status[err.code]} ${err.details}`));
    call.on('end', () => finish('the stream ended'));
  });
}

// CreateSession of two numbers, then WatchCallEvents until both end-of-call records came, then
// GetSessionReport.
async function watchSession(stub) {
  const phones = [...WATCH_PHONES.keys()];
  const { session } = await unary(stub, 'CreateSession', {
    script_id: SCRIPT_ID,
    name: 'WatchCallEvents check',
    contacts: phones.map((phone) => ({ phone })),
    retry_count: 0,
  });
  check(session.id !== '', `CreateSession(${phones.join(', ')}; retry_count=0) -> session.id=${JSON.stringify(session.id)}`,
    'empty session.id');
  if (session.id === '') return;

  const want = new Set(phones.map(last9));
  const t0 = Date.now();
  const { outcomes, problems, n } = await watchUntilEnded(stub, session.id, want);
  check(outcomes.size === want.size && problems.length === 0,
    `WatchCallEvents(session_id, from_start) -> both end-of-call records in ${n} event(s), ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    `records of ${JSON.stringify([...outcomes.keys()].sort())}; ${problems.join('; ')}`);
  for (const [phone, outcome] of WATCH_PHONES) {
    const got = outcomes.get(last9(phone));
    check(got === outcome, `${mask(phone)} ended ${outcome.replace(/^CALL_OUTCOME_/, '')}`, String(got));
  }

  // GetSessionReport: each contact's last outcome, summed up (int64 fields as strings: longs: String).
  const rep = await unary(stub, 'GetSessionReport', { session_id: session.id });
  check(rep.finished && Number(rep.contacts_total) === 2 && Number(rep.answered) === 1 && Number(rep.busy) === 1,
    `GetSessionReport -> finished=${rep.finished}, contacts_total=${rep.contacts_total}, answered=${rep.answered}, busy=${rep.busy}`,
    'want finished=true, contacts_total=2, answered=1, busy=1');

  // ListSessions: the tenant's sessions, newest first, with the same counts as the report.
  const page = await unary(stub, 'ListSessions', { page_size: 500 });
  const got = (page.sessions || []).find((s) => s.session && s.session.id === session.id);
  check(got !== undefined && Number(got.contacts_total) === Number(rep.contacts_total)
      && Number(got.answered) === Number(rep.answered) && Number(got.busy) === Number(rep.busy)
      && got.finished === rep.finished,
    `ListSessions(page_size=500) -> ${(page.sessions || []).length} session(s), ${session.id} with the report's counts`,
    JSON.stringify(got));
}

async function main(addr) {
  const defs = protoLoader.loadSync('callbot/v1/callbot.proto', { ...LOADER_OPTIONS, includeDirs: [PROTO_ROOT] });
  const callbot = grpc.loadPackageDefinition(defs).callbot.v1;
  const healthDefs = protoLoader.loadSync(HEALTH_PROTO, LOADER_OPTIONS);
  const health = grpc.loadPackageDefinition(healthDefs).grpc.health.v1;

  const stub = new callbot.CallBotService(addr, grpc.credentials.createInsecure());
  // The health client shares the channel of the first one.
  const healthStub = new health.Health(addr, null, { channelOverride: stub.getChannel() });
  try {
    try {
      await waitForReady(stub);
    } catch (e) {
      console.log(`FAIL cannot connect to ${addr}: ${e.message}`);
      return 1;
    }

    // ListScripts: a server stream, one script per message.
    const scripts = (await serverStream(stub, 'ListScripts', { name_contains: 'diem' })).map((r) => r.script);
    const found = scripts.filter((s) => s.id === SCRIPT_ID);
    check(found.length === 1, `ListScripts(name_contains=diem) streamed ${scripts.length} script(s) including ${SCRIPT_ID}`,
      scripts.map((s) => s.id));
    if (found.length > 0) {
      check(Buffer.from(found[0].name, 'utf8').equals(Buffer.from(SCRIPT_NAME, 'utf8')),
        `ListScripts name is byte-exact ${JSON.stringify(SCRIPT_NAME)}`, JSON.stringify(found[0].name));
    }

    // GetScript.
    const { script } = await unary(stub, 'GetScript', { script_id: SCRIPT_ID });
    check(script.id === SCRIPT_ID && script.name === SCRIPT_NAME,
      `GetScript(${SCRIPT_ID}) -> ${JSON.stringify(script.name)} with ${script.variables.length} variable(s)`,
      `${JSON.stringify(script.id)} ${JSON.stringify(script.name)}`);

    // CreateSession: one contact, Vietnamese variables; the facade generates the idempotency key.
    const { session } = await unary(stub, 'CreateSession', {
      script_id: SCRIPT_ID,
      name: 'Thông báo điểm thi — lớp 12A',
      contacts: [{ phone: '0912345678', variables: { uB131frQEU: '9,5 điểm', ho_ten: 'Nguyễn Thị Ánh' } }],
      voice: 'VOICE_SOUTHERN_FEMALE_HONGANH',
    });
    check(session.id !== '', `CreateSession -> session.id=${JSON.stringify(session.id)}`, 'empty session.id');
    check(UUID_RE.test(session.external_session_id),
      `CreateSession -> external_session_id=${session.external_session_id} (UUID)`, JSON.stringify(session.external_session_id));

    // A request that fails validation: every violation comes back at once, as BadRequest.
    let err = await expectError('CreateSession(invalid) fails',
      unary(stub, 'CreateSession', { script_id: '', contacts: [{ phone: '12' }] }));
    if (err) {
      const { info, bad } = errorDetails(err);
      const paths = bad ? bad.field_violations.map((v) => v.field).sort() : null;
      check(err.code === grpc.status.INVALID_ARGUMENT, 'CreateSession(invalid) -> INVALID_ARGUMENT', grpc.status[err.code]);
      check(JSON.stringify(paths) === JSON.stringify(['contacts[0].phone', 'script_id']),
        'BadRequest field paths = script_id, contacts[0].phone', paths);
      check(info !== null && info.reason === 'INVALID_REQUEST' && info.domain === 'callbot.v1',
        'ErrorInfo reason=INVALID_REQUEST domain=callbot.v1', info);
    }

    // An unknown script id.
    err = await expectError('GetScript(unknown) fails', unary(stub, 'GetScript', { script_id: '000000000000000000000000' }));
    if (err) {
      const { info } = errorDetails(err);
      check(err.code === grpc.status.NOT_FOUND && info !== null && info.reason === 'SCRIPT_NOT_FOUND' && info.domain === 'callbot.v1',
        'GetScript(unknown) -> NOT_FOUND, reason SCRIPT_NOT_FOUND', `${grpc.status[err.code]} ${JSON.stringify(info)}`);
    }

    // Health, for the whole server and for the service.
    for (const service of ['', 'callbot.v1.CallBotService']) {
      const resp = await unary(healthStub, 'Check', { service });
      check(resp.status === 'SERVING', `Health/Check(${JSON.stringify(service)}) -> SERVING`, resp.status);
    }

    // Two calls placed by the facade's simulator (or the provider), watched live, then summed up.
    await watchSession(stub);
  } finally {
    stub.close();
  }

  console.log(`node client: ${failures === 0 ? 'all checks passed' : `${failures} check(s) FAILED`}`);
  return failures ? 1 : 0;
}

if (process.argv.length !== 3) {
  console.error('usage: node client.js HOST:PORT');
  process.exit(2);
}
main(process.argv[2]).then(
  (rc) => process.exit(rc),
  (e) => {
    if (typeof e.code === 'number') console.log(`FAIL unexpected RPC error: ${grpc.status[e.code]} ${e.details}`);
    else console.log(`FAIL unexpected error: ${e.stack || e}`);
    process.exit(1);
  },
);
