-- wrk script for scripts/load.sh: drives berth's /token endpoint.
--
-- Environment (read once per wrk thread):
--   LOAD_METHOD  request method (default GET)
--   LOAD_BODY    request body; when set, sent as application/x-www-form-urlencoded
-- Headers such as Authorization are passed with wrk -H.
--
-- At the end it prints one machine-readable line that load.sh parses:
--   LOAD_RESULT requests=N duration_us=N p50_us=N p90_us=N p99_us=N max_us=N
--               status_errors=N socket_errors=N
-- status_errors is wrk's "Non-2xx or 3xx responses" counter.

local method = os.getenv("LOAD_METHOD")
local body = os.getenv("LOAD_BODY")

if method and method ~= "" then
  wrk.method = method
end
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LOAD_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
