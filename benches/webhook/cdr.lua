-- wrk script: a distinct end-of-call record (UPSTREAM.md §6.2 shape) per request, so every delivery is a new
-- fact the store keeps (a repeat would measure dedup, not the store). RUN (environment) prefixes the call ids,
-- so runs against one store never repeat each other; each wrk thread numbers its own.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local prefix = os.getenv("RUN") or "run"
local n = 0
local headers = { ["Content-Type"] = "application/json" }

function request()
  n = n + 1
  local body = string.format(
    '{"transaction_id":"%s-%d-%d","autocall_id":"bench-session-%d","direction":"outbound",' ..
    '"destination_number":"0912%06d","disposition":"ANSWERED","hangup_cause":"NORMAL_CLEARING",' ..
    '"bill_sec":"12","duration":30,"last_updated_date":1764590100000,"recording_file":""}',
    prefix, tid, n, n % 100, n % 1000000)
  return wrk.format("POST", nil, headers, body)
end
