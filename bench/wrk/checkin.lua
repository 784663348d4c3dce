-- wrk request script shared by bench/server.sh and bench/peers.sh: authenticated device
-- check-ins, each with one of the session tokens listed (one a line) in the file $SESSIONS,
-- spread over the fleet so that threads do not walk the same devices in step.
local tokens = {}
for line in io.lines(os.getenv("SESSIONS")) do tokens[#tokens + 1] = line end
local n = 0
local offset = 0
local body = '{"version":"1.0.0","security_counter":1,"state":"idle"}'
function setup(thread)
  offset = offset + 1
  thread:set("offset", offset * 7919)
end
function request()
  n = n + 1
  local t = tokens[((n + offset) % #tokens) + 1]
  return wrk.format("POST", "/api/v1/device/checkin",
    { ["Authorization"] = "Bearer " .. t, ["Content-Type"] = "application/json" }, body)
end
