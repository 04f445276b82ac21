-- The HTTP server (runtime/server*.c, http_parse.c) as a client sees it on
-- the wire: strict parsing, every refusal a JSON error with a request id,
-- limits and timeouts, keep-alive and pipelining, long polls that hold no
-- worker, and handlers that fail or answer nonsense.
local cli = require "support.cli"
local http = require "aitbc.http"
local json = require "aitbc.json"
local net = require "aitbc.native.net"
local sys = require "aitbc.sys"

--- Parses one HTTP response at the start of text: status, headers, body, rest
-- (nil while incomplete).
local function parse_response(text)
  local head_end = text:find("\r\n\r\n", 1, true)
  if not head_end then return nil end
  local head = text:sub(1, head_end - 1)
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[name:lower()] = value end
  local len = tonumber(headers["content-length"] or "0")
  if status == 100 then return { status = 100, headers = headers, body = "" }, text:sub(head_end + 4) end
  if #text < head_end + 3 + len then return nil end
  return { status = status, headers = headers, body = text:sub(head_end + 4, head_end + 3 + len) },
    text:sub(head_end + 4 + len)
end

--- Sends raw bytes on a new connection and reads responses: n of them, or
-- until the server closes.  -> responses, whether it closed, the connection
local function exchange(port, data, n, opts)
  local c = assert(net.connect("127.0.0.1", port))
  if data then c:send(data) end
  local got, buffer, closed = {}, "", false
  while not n or #got < n do
    local resp, rest = parse_response(buffer)
    if resp then
      got[#got + 1], buffer = resp, rest
    else
      local chunk, err = c:recv(65536, opts and opts.timeout or 5)
      if not chunk then closed = err == "closed" break end
      buffer = buffer .. chunk
    end
  end
  if not (opts and opts.keep) then c:close() end
  return got, closed, c
end

local function json_error(resp, status, code)
  assert.equal(status, resp.status)
  assert.matches("application/json", resp.headers["content-type"])
  local doc = json.decode(resp.body)
  assert.equal(code, doc.error.code)
  assert.equal(status, doc.error.status)
  assert.matches("^%x+$", doc.error.request_id)
  assert.equal(doc.error.request_id, resp.headers["x-request-id"])
  return doc
end

describe("the HTTP server", function()
  local srv, port
  setup(function()
    srv = cli.echo_server { max_body = 1024, head_timeout = 0.5, idle_timeout = 0.5, workers = 2,
      log_queue = "server_spec.log" }
    port = srv:port()
  end)
  teardown(function() srv:stop(1) end)

  it("answers a protocol error with the JSON error document and closes", function()
    local cases = {
      { "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported" },
      { "\22\3\1\0\165\1\0\0\161\3\3", 400, "bad_request" }, -- a TLS hello
      { "GET /echo HTTP/1.1\r\n Folded: yes\r\n\r\n", 400, "bad_request" },
      { "GET noslash HTTP/1.1\r\n\r\n", 400, "bad_request" },
      { "GET /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "bad_request" },
      { "GET /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, "bad_request" },
      { "GET /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "bad_request" },
      { "POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented" },
      { "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request" },
      { "GET /" .. string.rep("a", 9000) .. " HTTP/1.1\r\n\r\n", 414, "uri_too_long" },
      { "GET /echo HTTP/1.1\r\nX-Big: " .. string.rep("b", 40000) .. "\r\n\r\n", 431, "headers_too_large" },
      { "GET /echo HTTP/1.1\r\n" .. string.rep("X-Many: 1\r\n", 120) .. "\r\n", 431, "headers_too_large" },
      { "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413, "payload_too_large" },
      { "POST /echo HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417, "expectation_failed" },
    }
    sys.queue_drain("server_spec.log")
    for _, case in ipairs(cases) do
      local got, closed = exchange(port, case[1])
      assert.equal(1, #got, case[1]:sub(1, 40))
      local doc = json_error(got[1], case[2], case[3])
      assert.equal("close", got[1].headers.connection)
      assert.is_true(closed, "the connection stays open after " .. case[3])
      -- and each is logged, with its request id
      local line = json.decode(sys.queue_drain("server_spec.log")[1])
      assert.same({ case[2], doc.error.request_id, "request refused" }, { line.status, line.request_id, line.msg })
    end
    assert.equal(200, http.request { url = "http://127.0.0.1:" .. port .. "/health" }.status)
  end)

  it("reads chunked bodies, answers 100-continue, keeps connections alive and pipelines", function()
    local got = exchange(port, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n", 1)
    assert.equal("hello world", json.decode(got[1].body).body)
    got = exchange(port, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", 1)
    assert.equal(100, got[1].status)
    local three = "GET /echo?a=1&b=x%20y HTTP/1.1\r\n\r\nGET /status/404 HTTP/1.1\r\n\r\n"
      .. "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    got = exchange(port, three, 3)
    assert.same({ 200, 404, 200 }, { got[1].status, got[2].status, got[3].status })
    assert.same({ a = "1", b = "x y" }, json.decode(got[1].body).query)
    assert.equal("abc", json.decode(got[3].body).body)
    -- HTTP/1.0 closes unless asked to keep alive
    local _, closed = exchange(port, "GET /health HTTP/1.0\r\n\r\n")
    assert.is_true(closed)
    got = exchange(port, "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1)
    assert.equal("keep-alive", got[1].headers.connection)
  end)

  it("answers 408 to a request that does not arrive in time, and closes idle connections", function()
    local got, closed = exchange(port, "GET /echo HTTP/1.1\r\nX-Slow: ")
    json_error(got[1], 408, "request_timeout")
    assert.is_true(closed)
    local c = assert(net.connect("127.0.0.1", port))
    c:send("GET /health HTTP/1.1\r\n\r\n")
    assert.matches("^HTTP/1.1 200", c:recv(4096, 2))
    local data, why = c:recv(4096, 3) -- idle for longer than idle_timeout
    assert.is_nil(data)
    assert.equal("closed", why)
    c:close()
  end)

  it("answers a handler that fails or answers nonsense with a JSON 500, and goes on", function()
    for _, path in ipairs { "/fail", "/badstatus", "/badheader" } do
      local res = http.request { url = "http://127.0.0.1:" .. port .. path }
      assert.equal(500, res.status, path)
      assert.equal("internal", json.decode(res.body).error.code)
      assert.is_nil(res.headers.injected)
    end
    assert.equal(200, http.request { url = "http://127.0.0.1:" .. port .. "/health" }.status)
  end)

  it("keeps long polls without holding workers: more waiters than workers, woken by key", function()
    local base = "http://127.0.0.1:" .. port
    local waits = {}
    for i = 1, 8 do waits[i] = { url = base .. "/wait/k" .. (i % 2) .. "?seconds=20", timeout = 30 } end
    waits[9] = { url = base .. "/wait/nobody?seconds=0.3", timeout = 30 }
    -- two workers only: the notifications (sent after half a second, while
    -- the nine requests wait) find both free
    waits[10] = { url = base .. "/notify/k0?after=0.5", timeout = 30 }
    waits[11] = { url = base .. "/notify/k1?after=0.5", timeout = 30 }
    local results = http.request_many(waits)
    local woken = 0
    for i = 1, 8 do
      assert.equal(200, results[i].status)
      local doc = json.decode(results[i].body)
      if doc.resumed == "woken" then woken = woken + 1 end
      assert.is_true(doc.waited < 15)
    end
    assert.equal(8, woken)
    assert.equal("timeout", json.decode(results[9].body).resumed)
  end)

  it("wakes one waiter for notify-one, oldest first, passed on by those that decline; ns:* matches", function()
    local base = "http://127.0.0.1:" .. port
    local reqs = {
      { url = base .. "/wait/job:a?seconds=2&decline=1", timeout = 30 }, -- declines
      { url = base .. "/wait/job:*?seconds=2&decline=1", timeout = 30 }, -- any job, declines too
      { url = base .. "/wait/job:a?seconds=2&delay=0.1", timeout = 30 }, -- takes it
      { url = base .. "/wait/job:a?seconds=2&delay=0.2", timeout = 30 }, -- younger: never woken
      { url = base .. "/wait/other:a?seconds=2", timeout = 30 },        -- another namespace
      { url = base .. "/notify/job:a?one=1&after=0.5", timeout = 30 },
    }
    local results = http.request_many(reqs)
    local resumed = {}
    for i = 1, 5 do resumed[i] = json.decode(results[i].body).resumed end
    assert.same({ "timeout", "timeout", "woken", "timeout", "timeout" }, resumed)
  end)
end)

describe("the HTTP server's connection limits", function()
  --- How many descriptors this process may open (the server raised the soft limit).
  local function fd_limit()
    local text = assert(sys.read_file("/proc/self/limits"))
    return tonumber(text:match("Max open files%s+(%d+)")) or 1024
  end

  it("holds thousands of idle connections and still answers (the old server fell over at ~1,020)", function()
    local srv = cli.echo_server { max_per_address = 100000 }
    local port = srv:port()
    local n = math.min(2500, (fd_limit() - 300) // 2)
    local conns = {}
    for i = 1, n do conns[i] = assert(net.connect("127.0.0.1", port)) end
    local res = http.request { url = "http://127.0.0.1:" .. port .. "/health", timeout = 5 }
    assert.equal(200, res.status)
    -- each still works
    conns[n]:send("GET /health HTTP/1.1\r\n\r\n")
    assert.matches("^HTTP/1.1 200", conns[n]:recv(4096, 5))
    for _, c in ipairs(conns) do c:close() end
    srv:stop(1)
  end)

  it("turns away connections beyond the cap per address (429) and in all (503), with JSON", function()
    local srv = cli.echo_server { max_per_address = 3, max_connections = 5 }
    local port = srv:port()
    local held = {}
    for i = 1, 3 do held[i] = assert(net.connect("127.0.0.1", port)) end
    local got, closed = exchange(port, "GET /health HTTP/1.1\r\n\r\n")
    json_error(got[1], 429, "too_many_connections_from_address")
    assert.is_true(closed)
    -- another address is still welcome, up to the total
    for i = 4, 5 do held[i] = assert(net.connect("127.0.0.1", port, { source = "127.0.0." .. i })) end
    local c = assert(net.connect("127.0.0.1", port, { source = "127.0.0.9" }))
    c:send("GET /health HTTP/1.1\r\n\r\n")
    local text = ""
    repeat
      local chunk = c:recv(4096, 5)
      text = text .. (chunk or "")
    until not chunk
    json_error((parse_response(text)), 503, "too_many_connections")
    c:close()
    -- a freed slot is usable again
    held[1]:close()
    local status
    for _ = 1, 100 do -- until the server has seen the close
      got = exchange(port, "GET /health HTTP/1.1\r\n\r\n", 1)
      status = got[1].status
      if status == 200 then break end
      sys.sleep(0.02)
    end
    assert.equal(200, status)
    for _, h in ipairs(held) do h:close() end
    srv:stop(1)
  end)
end)
