-- sigil-server check-ins (after fleet.lua): each with one of the session tokens listed, one a
-- line, in the file $SESSIONS.
local tokens = {}
for line in io.lines(os.getenv("SESSIONS")) do tokens[#tokens + 1] = line end
local body = '{"version":"1.0.0","security_counter":1,"state":"idle"}'
function request()
  return wrk.format("POST", "/api/v1/device/checkin",
    { ["Authorization"] = "Bearer " .. pick(tokens), ["Content-Type"] = "application/json" }, body)
end
