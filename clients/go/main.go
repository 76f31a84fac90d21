// Command client calls callbot.v1.CallBotService: a usage example and a conformance check in one.
//
//	client HOST:PORT
//
// It prints one "ok ..." line per check, "FAIL ..." on a mismatch, and exits 1 if any check failed.
// Written for grpc-go 1.33 (Debian 12) and newer; see README.md for the build.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	callbotv1 "github.com/callbot-facade/callbot-facade/gen/go/callbot/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const (
	scriptID   = "64915bc76a690c0edad14723"
	scriptName = "Thông báo điểm thi" // compared as UTF-8 bytes
	timeout    = 30 * time.Second     // the deadline of the run up to the watch check
	// The deadline of the WatchCallEvents stream, and of each call around it.
	watchTimeout = 30 * time.Second
	callTimeout  = 10 * time.Second
)

// The watch check's contacts: the simulator decides by a number's last digit, ...0 is answered
// (talk 10 s), ...7 is busy.
var watchPhones = []string{"0912345670", "0912345677"}
var watchWant = map[string]callbotv1.CallOutcome{
	"0912345670": callbotv1.CallOutcome_CALL_OUTCOME_ANSWERED,
	"0912345677": callbotv1.CallOutcome_CALL_OUTCOME_BUSY,
}

var nonDigit = regexp.MustCompile(`\D`)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

var failures int

func check(cond bool, what string, detail interface{}) {
	if cond {
		fmt.Println("ok " + what)
		return
	}
	failures++
	fmt.Printf("FAIL %s: %v\n", what, detail)
}

// errorDetails decodes the google.rpc.Status details (grpc-status-details-bin) of a failed call.
func errorDetails(err error) (*status.Status, *errdetails.ErrorInfo, *errdetails.BadRequest) {
	st, _ := status.FromError(err)
	var info *errdetails.ErrorInfo
	var bad *errdetails.BadRequest
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			bad = d
		}
	}
	return st, info, bad
}

// last9 is a number without its prefix (0..., 84..., +84... compare equal).
func last9(phone string) string {
	d := nonDigit.ReplaceAllString(phone, "")
	if len(d) > 9 {
		return d[len(d)-9:]
	}
	return d
}

// mask keeps the last 3 digits of a number.
func mask(phone string) string {
	if len(phone) <= 3 {
		return phone
	}
	return strings.Repeat("*", len(phone)-3) + phone[len(phone)-3:]
}

// watchSession: CreateSession of two numbers, then WatchCallEvents until both end-of-call records
// came, then GetSessionReport. Its calls have their own deadlines (the stream's is watchTimeout).
func watchSession(client callbotv1.CallBotServiceClient) error {
	callCtx, cancelCall := context.WithTimeout(context.Background(), callTimeout)
	defer cancelCall()
	contacts := make([]*callbotv1.Contact, 0, len(watchPhones))
	for _, p := range watchPhones {
		contacts = append(contacts, &callbotv1.Contact{Phone: p})
	}
	retries := int32(0)
	created, err := client.CreateSession(callCtx, &callbotv1.CreateSessionRequest{
		ScriptId:   scriptID,
		Name:       "WatchCallEvents check",
		Contacts:   contacts,
		RetryCount: &retries,
	})
	if err != nil {
		return err
	}
	sessionID := created.GetSession().GetId()
	check(sessionID != "", fmt.Sprintf("CreateSession(%s; retry_count=0) -> session.id=%q", strings.Join(watchPhones, ", "), sessionID),
		"empty session.id")
	if sessionID == "" {
		return nil
	}

	// WatchCallEvents: a server stream that never ends by itself; replay (from_start), then live.
	// Each call yields RINGING, (ANSWERED), ENDED (live hangup, no outcome), then ENDED with the
	// outcome: the end-of-call record, the one to wait for. Cancelling the context ends the stream.
	want := map[string]bool{}
	for _, p := range watchPhones {
		want[last9(p)] = true
	}
	outcomes := map[string]callbotv1.CallOutcome{} // last 9 digits -> outcome of its end-of-call record
	var problems []string
	n := 0
	t0 := time.Now()
	watchCtx, cancelWatch := context.WithTimeout(context.Background(), watchTimeout)
	stream, err := client.WatchCallEvents(watchCtx, &callbotv1.WatchCallEventsRequest{SessionId: sessionID, FromStart: true})
	if err != nil {
		problems = append(problems, err.Error())
	}
	for err == nil && len(outcomes) < len(want) {
		var resp *callbotv1.WatchCallEventsResponse
		resp, err = stream.Recv()
		if err == io.EOF {
			problems = append(problems, "the stream ended")
			break
		}
		if err != nil {
			st, _ := status.FromError(err)
			problems = append(problems, fmt.Sprintf("%v %s", st.Code(), st.Message()))
			break
		}
		ev := resp.GetEvent()
		n++
		when := "-"
		if ev.GetOccurredAt() != nil {
			when = ev.GetOccurredAt().AsTime().UTC().Format("15:04:05.000Z")
		}
		fmt.Printf("  event %s %s %s %s\n", when, mask(ev.GetPhone()),
			strings.TrimPrefix(ev.GetState().String(), "CALL_STATE_"),
			strings.TrimPrefix(ev.GetOutcome().String(), "CALL_OUTCOME_"))
		if ev.GetSessionId() != sessionID {
			problems = append(problems, fmt.Sprintf("event %s of session %q", ev.GetId(), ev.GetSessionId()))
		}
		if ev.GetState() == callbotv1.CallState_CALL_STATE_ENDED && ev.GetOutcome() != callbotv1.CallOutcome_CALL_OUTCOME_UNSPECIFIED {
			key := last9(ev.GetPhone())
			if _, dup := outcomes[key]; !want[key] {
				problems = append(problems, fmt.Sprintf("end-of-call record of unknown number %q", ev.GetPhone()))
			} else if dup {
				problems = append(problems, fmt.Sprintf("second end-of-call record for %q", ev.GetPhone()))
			} else {
				outcomes[key] = ev.GetOutcome()
			}
		}
	}
	cancelWatch() // the stream would go on with live events: cancel it
	var got []string
	for k := range outcomes {
		got = append(got, k)
	}
	sort.Strings(got)
	check(len(outcomes) == len(want) && len(problems) == 0,
		fmt.Sprintf("WatchCallEvents(session_id, from_start) -> both end-of-call records in %d event(s), %.1f s", n, time.Since(t0).Seconds()),
		fmt.Sprintf("records of %v; %s", got, strings.Join(problems, "; ")))
	for _, p := range watchPhones {
		o, ok := outcomes[last9(p)]
		check(ok && o == watchWant[p], fmt.Sprintf("%s ended %s", mask(p), strings.TrimPrefix(watchWant[p].String(), "CALL_OUTCOME_")), o)
	}

	// GetSessionReport: each contact's last outcome, summed up.
	repCtx, cancelRep := context.WithTimeout(context.Background(), callTimeout)
	defer cancelRep()
	rep, err := client.GetSessionReport(repCtx, &callbotv1.GetSessionReportRequest{SessionId: sessionID})
	if err != nil {
		return err
	}
	check(rep.GetFinished() && rep.GetContactsTotal() == 2 && rep.GetAnswered() == 1 && rep.GetBusy() == 1,
		fmt.Sprintf("GetSessionReport -> finished=%v, contacts_total=%d, answered=%d, busy=%d",
			rep.GetFinished(), rep.GetContactsTotal(), rep.GetAnswered(), rep.GetBusy()),
		"want finished=true, contacts_total=2, answered=1, busy=1")

	// ListSessions: the tenant's sessions, newest first, with the same counts as the report.
	listCtx, cancelList := context.WithTimeout(context.Background(), callTimeout)
	defer cancelList()
	page, err := client.ListSessions(listCtx, &callbotv1.ListSessionsRequest{PageSize: 500})
	if err != nil {
		return err
	}
	var summary *callbotv1.SessionSummary
	for _, s := range page.GetSessions() {
		if s.GetSession().GetId() == sessionID {
			summary = s
		}
	}
	check(summary != nil && summary.GetContactsTotal() == rep.GetContactsTotal() && summary.GetAnswered() == rep.GetAnswered() &&
		summary.GetBusy() == rep.GetBusy() && summary.GetFinished() == rep.GetFinished(),
		fmt.Sprintf("ListSessions(page_size=500) -> %d session(s), %s with the report's counts", len(page.GetSessions()), sessionID),
		summary)
	return nil
}

func run(addr string) error {
	// One deadline bounds the run (dial and every call) up to the watch check, which has its own.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// grpc-go 1.33: no grpc.NewClient nor credentials/insecure yet.
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return fmt.Errorf("cannot connect to %s: %w", addr, err)
	}
	defer conn.Close()
	client := callbotv1.NewCallBotServiceClient(conn)

	// ListScripts: a server stream, one script per message.
	stream, err := client.ListScripts(ctx, &callbotv1.ListScriptsRequest{NameContains: "diem"})
	if err != nil {
		return err
	}
	var scripts []*callbotv1.Script
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		scripts = append(scripts, resp.GetScript())
	}
	var found *callbotv1.Script
	var ids []string
	for _, s := range scripts {
		ids = append(ids, s.GetId())
		if s.GetId() == scriptID {
			found = s
		}
	}
	check(found != nil, fmt.Sprintf("ListScripts(name_contains=diem) streamed %d script(s) including %s", len(scripts), scriptID), ids)
	if found != nil {
		check(bytes.Equal([]byte(found.GetName()), []byte(scriptName)),
			fmt.Sprintf("ListScripts name is byte-exact %q", scriptName), fmt.Sprintf("%q", found.GetName()))
	}

	// GetScript.
	got, err := client.GetScript(ctx, &callbotv1.GetScriptRequest{ScriptId: scriptID})
	if err != nil {
		return err
	}
	check(got.GetScript().GetId() == scriptID && got.GetScript().GetName() == scriptName,
		fmt.Sprintf("GetScript(%s) -> %q with %d variable(s)", scriptID, got.GetScript().GetName(), len(got.GetScript().GetVariables())),
		got.GetScript())

	// CreateSession: one contact, Vietnamese variables; the facade generates the idempotency key.
	created, err := client.CreateSession(ctx, &callbotv1.CreateSessionRequest{
		ScriptId: scriptID,
		Name:     "Thông báo điểm thi — lớp 12A",
		Contacts: []*callbotv1.Contact{{
			Phone:     "0912345678",
			Variables: map[string]string{"uB131frQEU": "9,5 điểm", "ho_ten": "Nguyễn Thị Ánh"},
		}},
		Voice: callbotv1.Voice_VOICE_SOUTHERN_FEMALE_HONGANH,
	})
	if err != nil {
		return err
	}
	session := created.GetSession()
	check(session.GetId() != "", fmt.Sprintf("CreateSession -> session.id=%q", session.GetId()), "empty session.id")
	check(uuidRE.MatchString(session.GetExternalSessionId()),
		fmt.Sprintf("CreateSession -> external_session_id=%s (UUID)", session.GetExternalSessionId()),
		fmt.Sprintf("%q", session.GetExternalSessionId()))

	// A request that fails validation: every violation comes back at once, as BadRequest.
	_, err = client.CreateSession(ctx, &callbotv1.CreateSessionRequest{
		ScriptId: "",
		Contacts: []*callbotv1.Contact{{Phone: "12"}},
	})
	if err == nil {
		check(false, "CreateSession(invalid) fails", "call succeeded")
	} else {
		st, info, bad := errorDetails(err)
		check(st.Code() == codes.InvalidArgument, "CreateSession(invalid) -> INVALID_ARGUMENT", st.Code())
		var paths []string
		for _, v := range bad.GetFieldViolations() {
			paths = append(paths, v.GetField())
		}
		sort.Strings(paths)
		check(strings.Join(paths, ",") == "contacts[0].phone,script_id",
			"BadRequest field paths = script_id, contacts[0].phone", paths)
		check(info.GetReason() == "INVALID_REQUEST" && info.GetDomain() == "callbot.v1",
			"ErrorInfo reason=INVALID_REQUEST domain=callbot.v1", info)
	}

	// An unknown script id.
	_, err = client.GetScript(ctx, &callbotv1.GetScriptRequest{ScriptId: "000000000000000000000000"})
	if err == nil {
		check(false, "GetScript(unknown) fails", "call succeeded")
	} else {
		st, info, _ := errorDetails(err)
		check(st.Code() == codes.NotFound && info.GetReason() == "SCRIPT_NOT_FOUND" && info.GetDomain() == "callbot.v1",
			"GetScript(unknown) -> NOT_FOUND, reason SCRIPT_NOT_FOUND", fmt.Sprintf("%v %v", st.Code(), info))
	}

	// Health, for the whole server and for the service.
	health := grpc_health_v1.NewHealthClient(conn)
	for _, service := range []string{"", "callbot.v1.CallBotService"} {
		resp, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: service})
		if err != nil {
			return err
		}
		check(resp.GetStatus() == grpc_health_v1.HealthCheckResponse_SERVING,
			fmt.Sprintf("Health/Check(%q) -> SERVING", service), resp.GetStatus())
	}

	// Two calls placed by the facade's simulator (or the provider), watched live, then summed up.
	return watchSession(client)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: client HOST:PORT")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		failures++
		fmt.Printf("FAIL unexpected error: %v\n", err)
	}
	if failures > 0 {
		fmt.Printf("go client: %d check(s) FAILED\n", failures)
		os.Exit(1)
	}
	fmt.Println("go client: all checks passed")
}
