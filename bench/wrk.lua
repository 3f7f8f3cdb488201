-- wrk script of the asu-ci benchmarks.
--   ASU_BENCH_METHOD  GET (default), HEAD or POST
--   ASU_BENCH_BODY    file whose bytes are the body of every request (JSON)
-- At the end it prints one line "WRK_JSON {...}" that bench/common.py reads:
-- request count, duration and latency percentiles in microseconds, error counts
-- (status = answers that were not 2xx/3xx).

wrk.method = os.getenv("ASU_BENCH_METHOD") or "GET"
local body_file = os.getenv("ASU_BENCH_BODY")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
