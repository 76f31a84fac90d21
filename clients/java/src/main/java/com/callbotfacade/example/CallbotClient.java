package com.callbotfacade.example;

import com.callbotfacade.callbot.v1.CallBotServiceGrpc;
import com.callbotfacade.callbot.v1.Contact;
import com.callbotfacade.callbot.v1.CreateSessionRequest;
import com.callbotfacade.callbot.v1.GetScriptRequest;
import com.callbotfacade.callbot.v1.ListScriptsRequest;
import com.callbotfacade.callbot.v1.ListScriptsResponse;
import com.callbotfacade.callbot.v1.Script;
import com.callbotfacade.callbot.v1.Session;
import com.callbotfacade.callbot.v1.Voice;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
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
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
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
