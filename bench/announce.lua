-- wrk script: distinct announces over a fixed set of swarms.
-- HASHES is filled in by bench/tracker.py (percent-encoded 20-byte info-hashes).
HASHES = {}
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function request()
  counter = counter + 1
  local ih = HASHES[(counter % #HASHES) + 1]
  local pid = string.format("-WK%02d01-%012d", tid or 0, counter)
  local port = 1024 + (counter * 7 + (tid or 0) * 997) % 60000
  local left = (counter % 4 == 0) and 0 or 1000000
  local path = "/announce?info_hash=" .. ih .. "&peer_id=" .. pid .. "&port=" .. port
    .. "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=50"
  if counter % 50 == 1 then path = path .. "&event=started" end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT {\"requests\": %d, \"duration_us\": %d, \"errors_status\": %d, "
    .. "\"errors_connect\": %d, \"errors_read\": %d, \"errors_timeout\": %d, "
    .. "\"p50_us\": %d, \"p99_us\": %d, \"max_us\": %d}\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
