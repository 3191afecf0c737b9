-- wrk script for the attnmap benchmark (POST bodies read from files).
-- Arguments after "--": a limit on responses (0 = none: stop by duration), then one or more
-- files holding JSON bodies, sent in turn. request() and response() are defined at the top
-- level because wrk decides whether a script is dynamic before init() runs; their cost per
-- request is the same for every server measured.
-- done() prints one line "WRKJSON {...}" that http_bench.py parses.

local requests_ = {}
local limit = 0
local received = 0
local sent = 0

local function read_file(path)
  local handle = assert(io.open(path, "rb"))
  local data = handle:read("*a")
  handle:close()
  return data
end

function init(args)
  limit = tonumber(args[1]) or 0
  for i = 2, #args do
    requests_[#requests_ + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, read_file(args[i]))
  end
end

function request()
  sent = sent + 1
  return requests_[(sent - 1) % #requests_ + 1]
end

function response(status, headers, body)
  received = received + 1
  if limit > 0 and received == limit then
    -- wrk keeps sleeping for its whole -d after a thread stops: tell the bench to interrupt it.
    io.stdout:write("LIMIT_REACHED\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
