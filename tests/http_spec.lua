-- The libcurl client against the libmicrohttpd server, both ours, on loopback.
local http = require "aitbc.http"
local json = require "aitbc.json"
local cli = require "support.cli"
local leaks = require "support.leaks"

describe("http client and server", function()
  local srv, base
  setup(function() srv, base = cli.echo_server() end)
  teardown(function() srv:stop(1) end)

  it("sends method, headers, query and JSON body; gets status and headers", function()
    local res = assert(http.request { method = "POST", url = base .. "/echo?a=1&b=two%20words",
      headers = { ["X-Api-Key"] = "k-123" }, json = { n = 1 } })
    assert.equal(200, res.status)
    assert.equal("application/json", res.headers["content-type"])
    local echo = res.json
    assert.equal("POST", echo.method)
    assert.equal("k-123", echo.headers["x-api-key"])
    assert.same({ a = "1", b = "two words" }, echo.query)
    assert.same({ n = 1 }, json.decode(echo.body))
    assert.equal("127.0.0.1", echo.remote)
    for _, m in ipairs { "PUT", "DELETE", "PATCH" } do
      assert.equal(m, http.request { method = m, url = base .. "/echo", body = "x" }.json.method)
    end
  end)

  it("returns error statuses as responses, not failures", function()
    for _, code in ipairs { 201, 204, 400, 401, 404, 425, 500, 503 } do
      assert.equal(code, assert(http.request { url = base .. "/status/" .. code }).status)
    end
    local res = assert(http.request { url = base .. "/headers" })
    assert.equal("yes", res.headers["x-custom"])
    assert.equal("7", res.headers["retry-after"])
  end)

  it("moves large bodies both ways", function()
    local res = assert(http.request { url = base .. "/big/5000000" })
    assert.equal(5000000, #res.body)
    local payload = string.rep("0123456789", 300000)
    local echo = assert(http.request { method = "POST", url = base .. "/echo", body = payload }).json
    assert.equal(#payload, #echo.body)
  end)

  it("answers 413 with a JSON error for a body over the server's limit, and keeps serving", function()
    local small = cli.echo_server { max_body = 1024 }
    local url = "http://127.0.0.1:" .. small:port()
    local res = assert(http.request { method = "POST", url = url .. "/echo", body = string.rep("x", 4096) })
    assert.equal(413, res.status)
    assert.equal("payload_too_large", res.json.error.code)
    assert.equal(200, assert(http.request { url = url .. "/health" }).status)
    small:stop(1)
  end)

  it("streams the body to a callback chunk by chunk, and can stop early", function()
    local lines = {}
    local res = assert(http.request { url = base .. "/stream/5", on_data = function(chunk)
      for line in chunk:gmatch("[^\n]+") do lines[#lines + 1] = json.decode(line).i end
    end })
    assert.equal(200, res.status)
    assert.is_nil(res.body)
    assert.same({ 1, 2, 3, 4, 5 }, lines)
    local got = 0
    local stopped, err = http.request { url = base .. "/stream/50", on_data = function() got = got + 1 return false end }
    assert.is_nil(stopped)
    assert.equal("aborted", err.code)
    assert.equal(1, got)
  end)

  it("re-raises an error thrown by the streaming callback", function()
    assert.has_error(function()
      http.request { url = base .. "/stream/3", on_data = function() error("callback broke", 0) end }
    end, "callback broke")
  end)

  it("times out a slow answer and names the cause", function()
    local res, err = http.request { url = base .. "/slow/2000", timeout = 0.3 }
    assert.is_nil(res)
    assert.equal("timeout", err.code)
    assert.equal("network", err.kind)
  end)

  it("reports a refused connection clearly", function()
    local port = cli.closed_port()
    local res, err = http.request { url = "http://127.0.0.1:" .. port .. "/health", timeout = 2 }
    assert.is_nil(res)
    assert.equal("connect", err.code)
    assert.matches("cannot reach http://127.0.0.1:" .. port, err.message)
    assert.has_error(function() http.call { url = "http://127.0.0.1:" .. port .. "/health" } end)
  end)

  it("rejects a malformed URL as a usage problem", function()
    local _, err = http.request { url = "notaurl://x" }
    assert.equal("usage", err.kind)
  end)

  it("fetches http and https only: file:// and other protocols are refused", function()
    local native = require "aitbc.native.http"
    for _, url in ipairs { "file:///etc/hostname", "ftp://127.0.0.1/", "dict://127.0.0.1/", "gopher://127.0.0.1/" } do
      local res, err = http.request { url = url }
      assert.is_nil(res)
      assert.equal("usage", err.kind)
      assert.matches("only http:// and https:// URLs", err.message)
      local many = native.request_many { { url = url } }
      assert.equal("url", many[1].kind)
    end
  end)

  it("refuses a method or header name that is not an HTTP token (no request smuggling)", function()
    for _, method in ipairs { "GET\r\nX-Injected: 1", "GET /x HTTP/1.1", "", "G\0T" } do
      assert.has_error(function() http.request { method = method, url = base .. "/echo" } end,
        "method is not an HTTP token (e.g. GET, POST; no spaces or line breaks)")
    end
    assert.has_error(function() http.request { url = base .. "/echo", headers = { ["X-A: b\r\nX-C"] = "d" } } end,
      "a header name is not an HTTP token (no spaces, colons or line breaks)")
    assert.has_error(function() http.request { url = base .. "/echo", headers = { ["X-A"] = "b\0\r\nX-C: d" } } end,
      "header X-A contains a line break or NUL")
    assert.equal("PROPFIND", http.request { method = "PROPFIND", url = base .. "/echo" }.json.method)
  end)

  it("leaks nothing when a request in request_many is invalid", function()
    local before = leaks.open_fds()
    for _ = 1, 10 do
      local ok, err = pcall(http.request_many, { { url = base .. "/health" }, { url = base .. "/health", headers = 5 } })
      assert.is_false(ok)
      assert.matches("headers must be a table", err)
    end
    local after = leaks.open_fds()
    assert.is_true(after <= before + 2, ("%d descriptors before, %d after"):format(before, after))
  end)

  it("leaks nothing when the streaming callback's chunk cannot be allocated", function()
    local alloc = leaks.alloc_fail()
    local function starve() alloc.fail(2) end -- the next push and its retry after a collection fail
    assert(http.request { url = base .. "/health" })
    local before = leaks.open_fds()
    for _ = 1, 5 do
      assert.has_error(function() http.request { url = base .. "/stream/5", on_data = starve } end, "not enough memory")
      assert.has_error(function() http.request_many { { url = base .. "/stream/5", on_data = starve } } end,
        "not enough memory")
      assert.equal(0, alloc.pending())
    end
    local after = leaks.open_fds()
    assert.is_true(after <= before + 2, ("%d descriptors before, %d after"):format(before, after))
    assert.equal(200, assert(http.request { url = base .. "/health" }).status)
  end)

  it("runs several requests at once, results in request order", function()
    local reqs = {}
    for i = 1, 8 do reqs[i] = { url = base .. "/slow/" .. (200 - i * 10) } end
    reqs[9] = { url = "http://127.0.0.1:" .. cli.closed_port() .. "/" }
    local results = http.request_many(reqs)
    for i = 1, 8 do
      assert.equal(200, results[i].status)
      assert.equal(200 - i * 10, json.decode(results[i].body).slept_ms)
    end
    assert.equal("connect", results[9].kind)
    assert.is_string(results[9].error)
  end)

  it("serves a slow request without holding up others", function()
    local results = http.request_many { { url = base .. "/slow/1500" }, { url = base .. "/health" } }
    assert.equal(200, results[1].status)
    assert.equal(200, results[2].status)
    assert.is_true(results[2].time < results[1].time)
  end)
end)

describe("http.request_many with many requests", function()
  it("handles 300 requests in one call (the Lua stack grows as needed)", function()
    local srv, base = cli.echo_server()
    local reqs = {}
    for i = 1, 300 do reqs[i] = { url = base .. "/echo?i=" .. i } end
    local results = http.request_many(reqs)
    assert.equal(300, #results)
    for i = 1, 300 do assert.equal(tostring(i), json.decode(results[i].body).query.i) end
    srv:stop(1)
  end)
end)
