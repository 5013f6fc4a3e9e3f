-- wrk script of bench/module.pl: every request carries an API key drawn
-- uniformly at random from a file (one key a line; a file of one key is the
-- hot key). Every variant, the plain proxy too, is driven by this script, so
-- wrk does the same work in each. done() prints what the bench reads:
-- responses, those wrk counts as status errors (status >= 400), socket
-- errors, and the p50/p99 latency in microseconds.
-- usage: wrk ... -s bench/rotate.lua <url> -- <keys file>
local reqs, n = {}, 0

local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    reqs[n] = wrk.format("GET", nil, { ["X-API-Key"] = line })
  end
  math.randomseed(os.time() * 100 + (id or 0))
end

function request()
  return reqs[math.random(n)]
end

function done(summary, latency)
  local e = summary.errors
  io.write(string.format("bench: responses=%d status_errors=%d socket_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
