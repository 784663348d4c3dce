-- Shared tail of the wrk scripts: one machine-readable line,
-- "RESULT <requests/s> <p50 ms> <p99 ms> <MiB/s> <requests> <non-2xx>/<timeouts>/<socket errors>
-- <bytes received>".
function done(summary, latency, requests)
  local s = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %.1f %d %d/%d/%d %.0f\n", summary.requests / s,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.bytes / s / 1048576,
    summary.requests, e.status, e.timeout, e.connect + e.read + e.write, summary.bytes))
end
