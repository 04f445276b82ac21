-- The older Python CLI (oib/AITBC at 5ff2d75cd1) against a real node: its
-- requests, byte for byte as it sent them (tests/fixtures/
-- upstream_cli_requests.json, recorded by tests/support/upstream/record.lua),
-- replayed in order with the keys and ids of this node's earlier answers.
-- Each answer must have a status the older CLI accepts and the fields it
-- reads.  A fixture marked "pending" (a route the node does not serve the
-- older way yet) is reported as pending, not failed; it says so when it
-- passes, so that its mark can go.
local cli = require "support.cli"
local compat = require "support.upstream.compat"
local http = require "aitbc.http"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

local recorded = json.decode(assert(sys.read_file("tests/fixtures/upstream_cli_requests.json")))

--- The request a fixture describes, with this node's keys and ids; nil and
-- the first placeholder nothing has given a value yet.
local function request_of(f, base, values)
  local path, missing = compat.substitute(f.path, values)
  if not path then return nil, missing end
  local query = {}
  for k, v in pairs(f.query) do
    query[k], missing = compat.substitute(v, values)
    if not query[k] then return nil, missing end
  end
  local headers = {}
  for k, v in pairs(f.headers) do
    headers[k], missing = compat.substitute(v, values)
    if not headers[k] then return nil, missing end
  end
  -- a POST without a body type stays without one (curl would add a form's)
  if f.method ~= "GET" and not headers["Content-Type"] then headers["Content-Type"] = "" end
  local body
  body, missing = compat.substitute(f.body, values)
  if not body then return nil, missing end
  if f.method == "GET" and body == "" then body = nil end
  return { method = f.method, url = http.with_query(base .. compat.encode_path(path), query), headers = headers,
    body = body, timeout = 30 }
end

describe("the older Python CLI's requests against the node", function()
  local node, wallet_home
  local values = {} -- placeholder -> this node's value

  setup(function()
    node = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    values["<client_key>"] = node:key("client")
    values["<miner_key>"] = node:key("miner")
    wallet_home = cli.tempdir()
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  --- Our CLI against the node, with both keys (it picks the one each route
  -- needs) and one wallet for all actions.
  local function ours(args)
    return cli.run(args, { home = wallet_home, timeout = 60, env = { AITBC_URL = node.url,
      AITBC_CLIENT_KEY = values["<client_key>"], AITBC_MINER_KEY = values["<miner_key>"],
      AITBC_WALLET_PASSWORD = "replay wallet pw" } })
  end

  local function replay(f)
    local req, missing = request_of(f, node.url, values)
    if not req then
      if f.pending then return pending(f.pending) end
      error(string.format("%s needs %s, from %s, which gave none", f.name, missing,
        tostring(f.feeds and f.feeds[missing])))
    end
    local res = assert(http.request(req))
    local problems = compat.problems(f, res.status, res.body, values)
    local doc = res.body ~= "" and json.decode(res.body) or nil
    for p, field in pairs(f.captures or {}) do
      local v = doc and compat.field(doc, field)
      if v ~= nil and values[p] == nil then values[p] = tostring(v) end
    end
    if f.pending then
      if #problems == 0 then
        return pending("PASSES NOW: remove its \"pending\" mark from the fixture (it was: " .. f.pending .. ")")
      end
      return pending(table.concat(problems, "; "))
    end
    assert(#problems == 0, string.format("%s: %s %s -> %d: %s", f.name, f.method, f.path, res.status,
      table.concat(problems, "; ")))
  end

  for _, f in ipairs(recorded.fixtures) do
    for _, a in ipairs(recorded.actions) do
      if a.before == f.name then
        it("(between commands) " .. a.action, function()
          local ok, why = compat.run_action(a, values, ours)
          if not ok then error(a.action .. ": " .. why) end
        end)
      end
    end
    it(f.name .. ": " .. f.command, function() replay(f) end)
  end
end)
