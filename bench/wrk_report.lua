-- wrk script: sends the Authorization header given in WRK_TOKEN (if any), POSTs the JSON body given in
-- WRK_BODY (if any; a GET otherwise), and prints one JSON line.
local token = os.getenv("WRK_TOKEN")
local body = os.getenv("WRK_BODY")
wrk.headers["Accept"] = "application/json"
if token and #token > 0 then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if body and #body > 0 then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "errors": %d, "non2xx": %d, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, errors, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
