--- Holds connections open on a node for bench/connections: IDLE plain
-- keep-alive connections and POLLS miners long-polling (each its own miner,
-- re-polling whenever it is answered), spread over loopback source addresses
-- (127.0.x.y) as clients on many hosts would be.  Writes READY_FILE once all
-- are open, runs until killed, and prints what it saw on SIGTERM.
--   aitbc run bench/hold.lua URL ADMIN_KEY IDLE POLLS READY_FILE
local http = require "aitbc.http"
local net = require "aitbc.native.net"
local sys = require "aitbc.sys"

local url, admin = arg[1], arg[2]
local idle, polls, ready = tonumber(arg[3]), tonumber(arg[4]), arg[5]
local host, port = url:match("^http://([%d%.]+):(%d+)")
port = tonumber(port)

local function miner_id(i) return "hold-" .. sys.getpid() .. "-" .. i end
local function source(i) return string.format("127.0.%d.%d", i // 200 + 10, i % 200 + 1) end

-- the miners: one key, many miner ids; models no bench job asks for, so the
-- polls wait (holding them is what is measured)
local res = assert(http.request { method = "POST", url = url .. "/v1/admin/keys", headers = { ["X-Api-Key"] = admin },
  json = { role = "miner" } })
local key = assert(res.json.key)
local reqs = {}
for i = 1, polls do
  reqs[#reqs + 1] = { method = "POST", url = url .. "/v1/miners/register", timeout = 60,
    headers = { ["X-Api-Key"] = key, ["Content-Type"] = "application/json" },
    body = string.format('{"miner_id":"%s","capabilities":{"models":["bench-idle"]}}', miner_id(i)) }
  if #reqs == 200 or i == polls then
    for _, r in ipairs(http.request_many(reqs)) do assert(r.status == 201 or r.status == 200, r.error or r.body) end
    reqs = {}
  end
end

local body = '{"max_wait_seconds":30}'
local function poll_request(i)
  return string.format("POST /v1/miners/poll HTTP/1.1\r\nX-Api-Key: %s\r\nX-Miner-ID: %s\r\n"
    .. "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", key, miner_id(i), #body, body)
end

local conns, pollers = {}, {}
for i = 1, idle + polls do
  local c, err = net.connect(host, port, { source = source(i) })
  if not c then io.stderr:write("hold: connection ", i, ": ", err, "\n") os.exit(1) end
  conns[i] = c
  if i > idle then
    pollers[#pollers + 1] = { conn = c, n = i - idle }
    c:send(poll_request(i - idle))
  end
end
-- ready once the node has them all and every poll waits
local function gauge(name)
  local m = http.request { url = url .. "/metrics", timeout = 10 }
  return m and tonumber(m.body:match("\n" .. name .. " (%d+)")) or 0
end
local deadline = sys.monotonic() + 120
while (gauge("aitbc_http_waiting") < polls or gauge("aitbc_http_connections") < #conns)
  and sys.monotonic() < deadline do
  sys.sleep(0.2)
end
assert(sys.write_file(ready, tostring(#conns) .. "\n"))

sys.on_interrupt("flag")
local answered, lost = 0, 0
while not sys.interrupted() do
  for _, p in ipairs(pollers) do
    local data, why = p.conn:recv(65536, 0)
    if data then
      answered = answered + 1
      p.conn:send(poll_request(p.n))
    elseif why == "closed" then
      lost = lost + 1
      p.conn:close()
      p.conn = assert(net.connect(host, port, { source = source(idle + p.n) }))
      p.conn:send(poll_request(p.n))
    end
  end
  sys.sleep(0.5)
end
print(string.format("held %d connections (%d idle, %d polling); polls answered %d, connections lost %d",
  #conns, idle, polls, answered, lost))
