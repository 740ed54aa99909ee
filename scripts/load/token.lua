-- wrk script for scripts/load.sh: drives berth's /token endpoint.
--
-- Environment (read once per wrk thread):
--   LOAD_METHOD  request method (default GET)
--   LOAD_BODY    request body; when set, sent as application/x-www-form-urlencoded
--   LOAD_MODE    "same" (default): every request is the command line's path;
--                "distinct": every request asks a scope no request asked before
--                (repository:alice/d-THREAD-N:pull appended), so no token can be
--                reused; "mix": same and distinct requests alternate.
-- Headers such as Authorization are passed with wrk -H.
--
-- At the end it prints one machine-readable line that load.sh parses:
--   LOAD_RESULT requests=N duration_us=N p50_us=N p90_us=N p99_us=N max_us=N
--               status_errors=N socket_errors=N
-- status_errors is wrk's "Non-2xx or 3xx responses" counter.

local method = os.getenv("LOAD_METHOD")
local body = os.getenv("LOAD_BODY")
local mode = os.getenv("LOAD_MODE") or "same"

if method and method ~= "" then
  wrk.method = method
end
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local n = 0
function request()
  if mode == "same" then
    return wrk.request()
  end
  n = n + 1
  if mode == "mix" and n % 2 == 0 then
    return wrk.request()
  end
  local path = wrk.path .. "&scope=repository%3Aalice%2Fd-" .. tostring(tid) .. "-" .. n .. "%3Apull"
  return wrk.format(nil, path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LOAD_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
