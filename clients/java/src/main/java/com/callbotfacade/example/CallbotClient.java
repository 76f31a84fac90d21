package com.callbotfacade.example;

import com.callbotfacade.callbot.v1.CallBotServiceGrpc;
import com.callbotfacade.callbot.v1.CallEvent;
import com.callbotfacade.callbot.v1.CallOutcome;
import com.callbotfacade.callbot.v1.CallState;
import com.callbotfacade.callbot.v1.Contact;
import com.callbotfacade.callbot.v1.CreateSessionRequest;
import com.callbotfacade.callbot.v1.GetScriptRequest;
import com.callbotfacade.callbot.v1.GetSessionReportRequest;
import com.callbotfacade.callbot.v1.GetSessionReportResponse;
import com.callbotfacade.callbot.v1.ListSessionsRequest;
import com.callbotfacade.callbot.v1.ListSessionsResponse;
import com.callbotfacade.callbot.v1.SessionSummary;
import com.callbotfacade.callbot.v1.ListScriptsRequest;
import com.callbotfacade.callbot.v1.ListScriptsResponse;
import com.callbotfacade.callbot.v1.Script;
import com.callbotfacade.callbot.v1.Session;
import com.callbotfacade.callbot.v1.Voice;
import com.callbotfacade.callbot.v1.WatchCallEventsRequest;
import com.callbotfacade.callbot.v1.WatchCallEventsResponse;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.protobuf.StatusProto;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;

/**
 * Calls callbot.v1.CallBotService: a usage example and a conformance check in one.
 *
 * <p>Usage: {@code java -cp ... com.callbotfacade.example.CallbotClient HOST:PORT}. Prints one
 * "ok ..." line per check, "FAIL ..." on a mismatch, and exits 1 if any check failed.
 */
public final class CallbotClient {
  private static final String SCRIPT_ID = "64915bc76a690c0edad14723";
  private static final String SCRIPT_NAME = "Thông báo điểm thi"; // compared as UTF-8 bytes
  private static final long TIMEOUT_SECONDS = 10; // the deadline of every call
  private static final long WATCH_TIMEOUT_SECONDS = 30; // the deadline of the WatchCallEvents stream
  // The watch check's contacts: the simulator decides by a number's last digit, ...0 is answered
  // (talk 10 s), ...7 is busy.
  private static final Map<String, CallOutcome> WATCH_PHONES = new LinkedHashMap<>();

  static {
    WATCH_PHONES.put("0912345670", CallOutcome.CALL_OUTCOME_ANSWERED);
    WATCH_PHONES.put("0912345677", CallOutcome.CALL_OUTCOME_BUSY);
  }

  private static final DateTimeFormatter EVENT_TIME =
      DateTimeFormatter.ofPattern("HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);
  private static final Pattern UUID =
      Pattern.compile("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$");

  // Vietnamese text on stdout whatever the locale.
  private static final PrintStream OUT =
      new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
  private static int failures = 0;

  private CallbotClient() {}

  private static void check(boolean cond, String what, Object detail) {
    if (cond) {
      OUT.println("ok " + what);
    } else {
      failures++;
      OUT.println("FAIL " + what + ": " + detail);
    }
  }

  /** The google.rpc error details (grpc-status-details-bin) of a failed call. */
  private static final class Details {
    ErrorInfo info;
    BadRequest badRequest;

    static Details of(StatusRuntimeException e) throws InvalidProtocolBufferException {
      Details d = new Details();
      com.google.rpc.Status st = StatusProto.fromThrowable(e);
      if (st == null) {
        return d;
      }
      for (Any any : st.getDetailsList()) {
        if (any.is(ErrorInfo.class)) {
          d.info = any.unpack(ErrorInfo.class);
        } else if (any.is(BadRequest.class)) {
          d.badRequest = any.unpack(BadRequest.class);
        }
      }
      return d;
    }
  }

  /** A number without its prefix (0..., 84..., +84... compare equal). */
  private static String last9(String phone) {
    String d = phone.replaceAll("\\D", "");
    return d.length() > 9 ? d.substring(d.length() - 9) : d;
  }

  /** Keeps the last 3 digits of a number. */
  private static String mask(String phone) {
    return phone.length() <= 3 ? phone : "*".repeat(phone.length() - 3) + phone.substring(phone.length() - 3);
  }

  /**
   * CreateSession of two numbers, then WatchCallEvents until both end-of-call records came, then
   * GetSessionReport.
   */
  private static void watchSession(CallBotServiceGrpc.CallBotServiceBlockingStub stub) {
    CreateSessionRequest.Builder req =
        CreateSessionRequest.newBuilder().setScriptId(SCRIPT_ID).setName("WatchCallEvents check").setRetryCount(0);
    for (String p : WATCH_PHONES.keySet()) {
      req.addContacts(Contact.newBuilder().setPhone(p));
    }
    String sessionId =
        stub.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS).createSession(req.build()).getSession().getId();
    check(!sessionId.isEmpty(),
        "CreateSession(" + String.join(", ", WATCH_PHONES.keySet()) + "; retry_count=0) -> session.id=\""
            + sessionId + "\"",
        "empty session.id");
    if (sessionId.isEmpty()) {
      return;
    }

    // WatchCallEvents: a server stream that never ends by itself; replay (from_start), then live.
    // Each call yields RINGING, (ANSWERED), ENDED (live hangup, no outcome), then ENDED with the
    // outcome: the end-of-call record, the one to wait for. A blocking stub's stream is cancelled
    // through the io.grpc.Context it was started in.
    Map<String, String> want = new TreeMap<>();
    for (String p : WATCH_PHONES.keySet()) {
      want.put(last9(p), p);
    }
    Map<String, CallOutcome> outcomes = new TreeMap<>(); // last 9 digits -> outcome of its end-of-call record
    List<String> problems = new ArrayList<>();
    int n = 0;
    long t0 = System.nanoTime();
    Context.CancellableContext watchCtx = Context.current().withCancellation();
    Context previous = watchCtx.attach();
    try {
      Iterator<WatchCallEventsResponse> events =
          stub.withDeadlineAfter(WATCH_TIMEOUT_SECONDS, TimeUnit.SECONDS)
              .watchCallEvents(
                  WatchCallEventsRequest.newBuilder().setSessionId(sessionId).setFromStart(true).build());
      while (outcomes.size() < want.size()) {
        if (!events.hasNext()) {
          problems.add("the stream ended");
          break;
        }
        CallEvent ev = events.next().getEvent();
        n++;
        String when =
            ev.hasOccurredAt()
                ? EVENT_TIME.format(Instant.ofEpochSecond(ev.getOccurredAt().getSeconds(), ev.getOccurredAt().getNanos()))
                : "-";
        OUT.println("  event " + when + " " + mask(ev.getPhone()) + " "
            + ev.getState().name().replaceFirst("^CALL_STATE_", "") + " "
            + ev.getOutcome().name().replaceFirst("^CALL_OUTCOME_", ""));
        if (!ev.getSessionId().equals(sessionId)) {
          problems.add("event " + ev.getId() + " of session \"" + ev.getSessionId() + "\"");
        }
        if (ev.getState() == CallState.CALL_STATE_ENDED && ev.getOutcome() != CallOutcome.CALL_OUTCOME_UNSPECIFIED) {
          String key = last9(ev.getPhone());
          if (!want.containsKey(key)) {
            problems.add("end-of-call record of unknown number \"" + ev.getPhone() + "\"");
          } else if (outcomes.containsKey(key)) {
            problems.add("second end-of-call record for \"" + ev.getPhone() + "\"");
          } else {
            outcomes.put(key, ev.getOutcome());
          }
        }
      }
    } catch (StatusRuntimeException e) {
      problems.add(e.getStatus().toString());
    } finally {
      watchCtx.detach(previous);
      watchCtx.cancel(null); // the stream would go on with live events: cancel it
    }
    double elapsed = (System.nanoTime() - t0) / 1e9;
    check(outcomes.size() == want.size() && problems.isEmpty(),
        String.format(Locale.ROOT, "WatchCallEvents(session_id, from_start) -> both end-of-call records in %d event(s), %.1f s",
            n, elapsed),
        "records of " + outcomes.keySet() + "; " + String.join("; ", problems));
    for (Map.Entry<String, CallOutcome> e : WATCH_PHONES.entrySet()) {
      CallOutcome got = outcomes.get(last9(e.getKey()));
      check(got == e.getValue(),
          mask(e.getKey()) + " ended " + e.getValue().name().replaceFirst("^CALL_OUTCOME_", ""), got);
    }

    // GetSessionReport: each contact's last outcome, summed up.
    GetSessionReportResponse rep =
        stub.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .getSessionReport(GetSessionReportRequest.newBuilder().setSessionId(sessionId).build());
    check(rep.getFinished() && rep.getContactsTotal() == 2 && rep.getAnswered() == 1 && rep.getBusy() == 1,
        "GetSessionReport -> finished=" + rep.getFinished() + ", contacts_total=" + rep.getContactsTotal()
            + ", answered=" + rep.getAnswered() + ", busy=" + rep.getBusy(),
        "want finished=true, contacts_total=2, answered=1, busy=1");

    // ListSessions: the tenant's sessions, newest first, with the same counts as the report.
    ListSessionsResponse page =
        stub.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .listSessions(ListSessionsRequest.newBuilder().setPageSize(500).build());
    SessionSummary got = null;
    for (SessionSummary s : page.getSessionsList()) {
      if (s.getSession().getId().equals(sessionId)) {
        got = s;
      }
    }
    check(got != null && got.getContactsTotal() == rep.getContactsTotal() && got.getAnswered() == rep.getAnswered()
            && got.getBusy() == rep.getBusy() && got.getFinished() == rep.getFinished(),
        "ListSessions(page_size=500) -> " + page.getSessionsCount() + " session(s), " + sessionId
            + " with the report's counts",
        got);
  }

  private static void run(ManagedChannel channel) throws InvalidProtocolBufferException {
    // waitForReady: a call waits for the connection (within its deadline) instead of failing fast.
    CallBotServiceGrpc.CallBotServiceBlockingStub stub =
        CallBotServiceGrpc.newBlockingStub(channel).withWaitForReady();

    // ListScripts: a server stream, one script per message.
    Iterator<ListScriptsResponse> stream =
        stub.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .listScripts(ListScriptsRequest.newBuilder().setNameContains("diem").build());
    List<String> ids = new ArrayList<>();
    Script found = null;
    while (stream.hasNext()) {
      Script s = stream.next().getScript();
      ids.add(s.getId());
      if (s.getId().equals(SCRIPT_ID)) {
        found = s;
      }
    }
    check(found != null,
        "ListScripts(name_contains=diem) streamed " + ids.size() + " script(s) including " + SCRIPT_ID, ids);
    if (found != null) {
      check(Arrays.equals(found.getNameBytes().toByteArray(), SCRIPT_NAME.getBytes(StandardCharsets.UTF_8)),
          "ListScripts name is byte-exact \"" + SCRIPT_NAME + "\"", found.getName());
    }

    // GetScript.
    Script script =
        stub.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .getScript(GetScriptRequest.newBuilder().setScriptId(SCRIPT_ID).build())
            .getScript();
    check(script.getId().equals(SCRIPT_ID) && script.getName().equals(SCRIPT_NAME),
        "GetScript(" + SCRIPT_ID + ") -> \"" + script.getName() + "\" with "
            + script.getVariablesCount() + " variable(s)",
        script);

    // CreateSession: one contact, Vietnamese variables; the facade generates the idempotency key.
    Session session =
        stub.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
            .createSession(
                CreateSessionRequest.newBuilder()
                    .setScriptId(SCRIPT_ID)
                    .setName("Thông báo điểm thi — lớp 12A")
                    .addContacts(
                        Contact.newBuilder()
                            .setPhone("0912345678")
                            .putVariables("uB131frQEU", "9,5 điểm")
                            .putVariables("ho_ten", "Nguyễn Thị Ánh"))
                    .setVoice(Voice.VOICE_SOUTHERN_FEMALE_HONGANH)
                    .build())
            .getSession();
    check(!session.getId().isEmpty(), "CreateSession -> session.id=\"" + session.getId() + "\"", "empty session.id");
    check(UUID.matcher(session.getExternalSessionId()).matches(),
        "CreateSession -> external_session_id=" + session.getExternalSessionId() + " (UUID)",
        "\"" + session.getExternalSessionId() + "\"");

    // A request that fails validation: every violation comes back at once, as BadRequest.
    try {
      stub.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
          .createSession(
              CreateSessionRequest.newBuilder()
                  .setScriptId("")
                  .addContacts(Contact.newBuilder().setPhone("12"))
                  .build());
      check(false, "CreateSession(invalid) fails", "call succeeded");
    } catch (StatusRuntimeException e) {
      Details d = Details.of(e);
      check(e.getStatus().getCode() == Status.Code.INVALID_ARGUMENT,
          "CreateSession(invalid) -> INVALID_ARGUMENT", e.getStatus());
      List<String> paths = new ArrayList<>();
      if (d.badRequest != null) {
        for (BadRequest.FieldViolation v : d.badRequest.getFieldViolationsList()) {
          paths.add(v.getField());
        }
      }
      Collections.sort(paths);
      check(paths.equals(List.of("contacts[0].phone", "script_id")),
          "BadRequest field paths = script_id, contacts[0].phone", paths);
      check(d.info != null && d.info.getReason().equals("INVALID_REQUEST") && d.info.getDomain().equals("callbot.v1"),
          "ErrorInfo reason=INVALID_REQUEST domain=callbot.v1", d.info);
    }

    // An unknown script id.
    try {
      stub.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
          .getScript(GetScriptRequest.newBuilder().setScriptId("000000000000000000000000").build());
      check(false, "GetScript(unknown) fails", "call succeeded");
    } catch (StatusRuntimeException e) {
      Details d = Details.of(e);
      check(e.getStatus().getCode() == Status.Code.NOT_FOUND
              && d.info != null
              && d.info.getReason().equals("SCRIPT_NOT_FOUND")
              && d.info.getDomain().equals("callbot.v1"),
          "GetScript(unknown) -> NOT_FOUND, reason SCRIPT_NOT_FOUND", e.getStatus() + " " + d.info);
    }

    // Health, for the whole server and for the service.
    HealthGrpc.HealthBlockingStub health = HealthGrpc.newBlockingStub(channel);
    for (String service : List.of("", "callbot.v1.CallBotService")) {
      HealthCheckResponse resp =
          health.withDeadlineAfter(TIMEOUT_SECONDS, TimeUnit.SECONDS)
              .check(HealthCheckRequest.newBuilder().setService(service).build());
      check(resp.getStatus() == HealthCheckResponse.ServingStatus.SERVING,
          "Health/Check(\"" + service + "\") -> SERVING", resp.getStatus());
    }

    // Two calls placed by the facade's simulator (or the provider), watched live, then summed up.
    watchSession(stub);
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: CallbotClient HOST:PORT");
      System.exit(2);
    }
    ManagedChannel channel = ManagedChannelBuilder.forTarget(args[0]).usePlaintext().build();
    try {
      run(channel);
    } catch (StatusRuntimeException e) {
      failures++;
      OUT.println("FAIL unexpected RPC error: " + e.getStatus());
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    if (failures > 0) {
      OUT.println("java client: " + failures + " check(s) FAILED");
      System.exit(1);
    }
    OUT.println("java client: all checks passed");
  }
}
