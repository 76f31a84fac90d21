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
	timeout    = 30 * time.Second     // the deadline of the whole run
)

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

func run(addr string) error {
	// One deadline bounds the whole run (dial and every call).
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
	return nil
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
