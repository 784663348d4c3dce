-- Shared head of the wrk check-in scripts (bench/server.sh, bench/peers.sh): `pick(list)` walks
-- the fleet list round-robin, each wrk thread from its own start so that threads do not poll
-- the same devices in step. `setup` runs in wrk's main Lua state and hands each thread its
-- start, which arrives in the thread's state as the global `start`.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("start", threads * 7919)
end
local n = 0
function pick(list)
  n = n + 1
  return list[((n + (start or 0)) % #list) + 1]
end
