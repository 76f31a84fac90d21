#!/usr/bin/env python3
"""callbot.v1 client in Python: a usage example and a conformance check in one.

Usage: PYTHONPATH=<generated code> python3 client.py HOST:PORT

Prints one "ok ..." line per check, "FAIL ..." on a mismatch, and exits non-zero
if any check failed. See README.md for the packages and the code generation step.
"""
import re
import sys
import time

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from callbot.v1 import callbot_pb2, callbot_pb2_grpc

SCRIPT_ID = "64915bc76a690c0edad14723"
SCRIPT_NAME = "Thông báo điểm thi"  # compared as UTF-8 bytes
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
TIMEOUT = 10  # seconds, the deadline of every call
WATCH_TIMEOUT = 30  # seconds, the deadline of the WatchCallEvents stream
# The simulator decides by a number's last digit: ...0 is answered (talk 10 s), ...7 is busy.
WATCH_PHONES = {"0912345670": "CALL_OUTCOME_ANSWERED", "0912345677": "CALL_OUTCOME_BUSY"}

failures = 0


def check(cond, what, detail=""):
    global failures
    if cond:
        print(f"ok {what}")
    else:
        failures += 1
        print(f"FAIL {what}: {detail}")


def error_details(err):
    """Decodes the google.rpc.Status of a failed call (grpc-status-details-bin)."""
    st = rpc_status.from_call(err)
    info, bad = None, None
    if st is None:
        return info, bad
    for any_msg in st.details:
        if any_msg.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_msg.Unpack(info)
        elif any_msg.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_msg.Unpack(bad)
    return info, bad


def last9(phone):
    """The number without its prefix (0..., 84..., +84... compare equal)."""
    return re.sub(r"\D", "", phone)[-9:]


def mask(phone):
    """Keeps the last 3 digits of a number."""
    return "*" * max(len(phone) - 3, 0) + phone[-3:]


def enum_name(enum, value, prefix):
    return enum.Name(value).removeprefix(prefix)


def watch_session(stub):
    """CreateSession of two numbers, then WatchCallEvents until both end-of-call records came, then
    GetSessionReport."""
    req = callbot_pb2.CreateSessionRequest(
        script_id=SCRIPT_ID,
        name="WatchCallEvents check",
        contacts=[callbot_pb2.Contact(phone=p) for p in WATCH_PHONES],
        retry_count=0,
    )
    session = stub.CreateSession(req, timeout=TIMEOUT).session
    check(session.id != "", f"CreateSession({', '.join(WATCH_PHONES)}; retry_count=0) -> session.id={session.id!r}",
          "empty session.id")
    if not session.id:
        return

    # WatchCallEvents: a server stream that never ends by itself; replay (from_start), then live.
    # Each call yields RINGING, (ANSWERED), ENDED (live hangup, no outcome), then ENDED with the
    # outcome: the end-of-call record, the one to wait for.
    want = {last9(p): p for p in WATCH_PHONES}
    outcomes = {}  # last 9 digits -> outcome name of its end-of-call record
    problems = []
    n = 0
    t0 = time.monotonic()
    call = stub.WatchCallEvents(callbot_pb2.WatchCallEventsRequest(session_id=session.id, from_start=True),
                                timeout=WATCH_TIMEOUT)
    try:
        for resp in call:
            ev = resp.event
            n += 1
            when = ev.occurred_at.ToDatetime().strftime("%H:%M:%S.%f")[:-3] + "Z" if ev.HasField("occurred_at") else "-"
            print(f"  event {when} {mask(ev.phone)} {enum_name(callbot_pb2.CallState, ev.state, 'CALL_STATE_')}"
                  f" {enum_name(callbot_pb2.CallOutcome, ev.outcome, 'CALL_OUTCOME_')}")
            if ev.session_id != session.id:
                problems.append(f"event {ev.id} of session {ev.session_id!r}")
            if ev.state == callbot_pb2.CALL_STATE_ENDED and ev.outcome != callbot_pb2.CALL_OUTCOME_UNSPECIFIED:
                key = last9(ev.phone)
                if key not in want:
                    problems.append(f"end-of-call record of unknown number {ev.phone!r}")
                elif key in outcomes:
                    problems.append(f"second end-of-call record for {ev.phone!r}")
                else:
                    outcomes[key] = callbot_pb2.CallOutcome.Name(ev.outcome)
            if len(outcomes) == len(want):
                break
        else:
            problems.append("the stream ended")
    except grpc.RpcError as err:
        problems.append(f"{err.code()} {err.details()}")
    finally:
        call.cancel()  # the stream would go on with live events: cancel it
    elapsed = time.monotonic() - t0
    check(len(outcomes) == len(want) and not problems,
          f"WatchCallEvents(session_id, from_start) -> both end-of-call records in {n} event(s), {elapsed:.1f} s",
          f"records of {sorted(outcomes)}; {'; '.join(problems) or 'none missing'}")
    for phone, outcome in WATCH_PHONES.items():
        got = outcomes.get(last9(phone))
        check(got == outcome, f"{mask(phone)} ended {outcome.removeprefix('CALL_OUTCOME_')}", got)

    # GetSessionReport: each contact's last outcome, summed up.
    rep = stub.GetSessionReport(callbot_pb2.GetSessionReportRequest(session_id=session.id), timeout=TIMEOUT)
    check(rep.finished and rep.contacts_total == 2 and rep.answered == 1 and rep.busy == 1,
          f"GetSessionReport -> finished={rep.finished}, contacts_total={rep.contacts_total}, "
          f"answered={rep.answered}, busy={rep.busy}",
          "want finished=True, contacts_total=2, answered=1, busy=1")

    # ListSessions: the tenant's sessions, newest first, with the same counts as the report.
    page = stub.ListSessions(callbot_pb2.ListSessionsRequest(page_size=500), timeout=TIMEOUT)
    mine = [s for s in page.sessions if s.session.id == session.id]
    got = mine[0] if mine else None
    check(got is not None and got.name == "WatchCallEvents check" and got.contacts_total == rep.contacts_total
          and got.answered == rep.answered and got.busy == rep.busy and got.finished == rep.finished,
          f"ListSessions(page_size=500) -> {len(page.sessions)} session(s), {session.id} with the report's counts",
          got)


def main(addr):
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        stub = callbot_pb2_grpc.CallBotServiceStub(channel)

        # ListScripts: a server stream, one script per message.
        scripts = [
            r.script
            for r in stub.ListScripts(callbot_pb2.ListScriptsRequest(name_contains="diem"), timeout=TIMEOUT)
        ]
        found = [s for s in scripts if s.id == SCRIPT_ID]
        check(len(found) == 1, f"ListScripts(name_contains=diem) streamed {len(scripts)} script(s) including {SCRIPT_ID}",
              [s.id for s in scripts])
        if found:
            check(found[0].name.encode("utf-8") == SCRIPT_NAME.encode("utf-8"),
                  f"ListScripts name is byte-exact {SCRIPT_NAME!r}", repr(found[0].name))

        # GetScript.
        script = stub.GetScript(callbot_pb2.GetScriptRequest(script_id=SCRIPT_ID), timeout=TIMEOUT).script
        check(script.id == SCRIPT_ID and script.name == SCRIPT_NAME,
              f"GetScript({SCRIPT_ID}) -> {script.name!r} with {len(script.variables)} variable(s)",
              f"{script.id!r} {script.name!r}")

        # CreateSession: one contact, Vietnamese variables; the facade generates the idempotency key.
        req = callbot_pb2.CreateSessionRequest(
            script_id=SCRIPT_ID,
            name="Thông báo điểm thi — lớp 12A",
            contacts=[callbot_pb2.Contact(
                phone="0912345678",
                variables={"uB131frQEU": "9,5 điểm", "ho_ten": "Nguyễn Thị Ánh"},
            )],
            voice=callbot_pb2.VOICE_SOUTHERN_FEMALE_HONGANH,
        )
        session = stub.CreateSession(req, timeout=TIMEOUT).session
        check(session.id != "", f"CreateSession -> session.id={session.id!r}", "empty session.id")
        check(UUID_RE.match(session.external_session_id) is not None,
              f"CreateSession -> external_session_id={session.external_session_id} (UUID)",
              repr(session.external_session_id))

        # A request that fails validation: every violation comes back at once, as BadRequest.
        bad_req = callbot_pb2.CreateSessionRequest(script_id="", contacts=[callbot_pb2.Contact(phone="12")])
        try:
            stub.CreateSession(bad_req, timeout=TIMEOUT)
            check(False, "CreateSession(invalid) fails", "call succeeded")
        except grpc.RpcError as err:
            info, bad = error_details(err)
            paths = sorted(v.field for v in bad.field_violations) if bad else None
            check(err.code() == grpc.StatusCode.INVALID_ARGUMENT, "CreateSession(invalid) -> INVALID_ARGUMENT", err.code())
            check(paths == ["contacts[0].phone", "script_id"],
                  "BadRequest field paths = script_id, contacts[0].phone", paths)
            check(info is not None and info.reason == "INVALID_REQUEST" and info.domain == "callbot.v1",
                  "ErrorInfo reason=INVALID_REQUEST domain=callbot.v1", info)

        # An unknown script id.
        try:
            stub.GetScript(callbot_pb2.GetScriptRequest(script_id="000000000000000000000000"), timeout=TIMEOUT)
            check(False, "GetScript(unknown) fails", "call succeeded")
        except grpc.RpcError as err:
            info, _ = error_details(err)
            check(err.code() == grpc.StatusCode.NOT_FOUND and info is not None
                  and info.reason == "SCRIPT_NOT_FOUND" and info.domain == "callbot.v1",
                  "GetScript(unknown) -> NOT_FOUND, reason SCRIPT_NOT_FOUND", f"{err.code()} {info}")

        # Health, for the whole server and for the service.
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "callbot.v1.CallBotService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            check(resp.status == health_pb2.HealthCheckResponse.SERVING,
                  f"Health/Check({service!r}) -> SERVING", health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

        # Two calls placed by the facade's simulator (or the provider), watched live, then summed up.
        watch_session(stub)

    print(f"python client: {'all checks passed' if failures == 0 else f'{failures} check(s) FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: client.py HOST:PORT")
    try:
        sys.exit(main(sys.argv[1]))
    except grpc.RpcError as e:
        print(f"FAIL unexpected RPC error: {e.code()} {e.details()}")
        sys.exit(1)
    except grpc.FutureTimeoutError:
        print(f"FAIL cannot connect to {sys.argv[1]}")
        sys.exit(1)
