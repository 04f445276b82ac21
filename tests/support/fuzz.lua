--- A request fuzzer for the node: mutated requests against every route
-- (methods, paths, queries, headers, bodies: deep nesting, huge and
-- non-finite numbers, wrong types, invalid UTF-8, truncated JSON) with valid
-- keys of each role, sent concurrently with http.request_many.
--
-- Request i of seed s is the same whatever the node answers (each request
-- draws from its own generator seeded with (s, i)), so a failure replays
-- with the same seed.  What the node must never do: answer 5xx, drop a
-- connection, or send JSON that is not UTF-8.
--   fuzz.run{url=, admin_key=, seed=, count=, concurrency=, budget_s=} -> report
local chain = require "aitbc.node.chain"
local crypto = require "aitbc.crypto"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local wallet = require "aitbc.wallet"

local M = {}

-- ---- a small deterministic generator (splitmix64) ----

local function generator(seed)
  local state = seed
  local r = {}
  function r.next()
    state = state + 0x9e3779b97f4a7c15
    local z = state
    z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
    z = (z ~ (z >> 27)) * 0x94d049bb133111eb
    return z ~ (z >> 31)
  end
  function r.int(n) return (r.next() >> 1) % n + 1 end -- 1..n
  function r.pick(t) return t[r.int(#t)] end
  function r.chance(p) return r.int(10000) <= p * 10000 end
  return r
end

-- ---- hostile values ----

-- Raw JSON text stands in a table as RAW .. text .. RAW_END; after encoding
-- it replaces its quoted placeholder, so NaN and broken escapes get through.
local RAW, RAW_END = "\1raw:", ":raw\1"
local function raw(text) return RAW .. text .. RAW_END end
local function unraw(text)
  return (text:gsub('"\\u0001raw:(.-):raw\\u0001"', function(t) return (t:gsub("\\\\", "\\"):gsub('\\"', '"')) end))
end

local function nested(depth, open, close, leaf)
  return string.rep(open, depth) .. leaf .. string.rep(close, depth)
end

local NON_FINITE = { "NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999" }
local NUMBERS = { "NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "-1e308", "1e-400", "0x10", "-0",
  "9007199254740993", "18446744073709551616", "-9223372036854775809", "-1", "0", "1.5", "1e2", "00", "1.", ".5", "1e",
  "2147483648", "4097", "3600", "86401" }

local STRINGS = { "", string.rep("a", 10000), "\xff", "caf\xe9", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80",
  "\0", "a\0b", "../../../etc/passwd", "%00", "%FF", "null", "NaN", "-1", "1e999", "9300000000", "0.0000000001",
  "AIT1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ", "ait1", "RTX 4090", "\u{1F600}", "QUEUED", "admin", "x\r\ny",
  "<script>", "'; DROP TABLE jobs; --" }

local RAW_TEXTS = { '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"\\u0000"', '"\\uZZZZ"', '"\\x41"', "[,]", "{,}",
  "[1,]", '{"a":}', "tru", "nul", "'single'" }

local function hostile(r, depth_room)
  local kind = r.int(10)
  if kind <= 1 then return raw(r.pick(NON_FINITE)) end
  if kind <= 3 then return raw(r.pick(NUMBERS)) end
  if kind <= 5 then return r.pick(STRINGS) end
  if kind == 6 then return r.pick { true, false, json.null, {}, json.array(), { 1, 2, 3 }, { a = { b = {} } } } end
  if kind == 7 then return raw(r.pick(RAW_TEXTS)) end
  if kind == 8 then
    local d = r.pick { 8, 30, 31, 32, 33, 62, 63, 64, 65, 200, 1000 }
    d = math.max(1, d - (depth_room or 0))
    return raw(r.chance(0.5) and nested(d, "[", "]", "1") or nested(d, '{"a":', "}", "null"))
  end
  if kind == 9 then
    local list = json.array()
    for i = 1, r.pick { 65, 501, 2000 } do list[i] = r.chance(0.5) and i or "m" end
    return list
  end
  return r.int(2 ^ 31) * (r.chance(0.5) and -1 or 1)
end

-- ---- the routes and what a valid request to each looks like ----

-- Routes that need no key (whoami lists only the others).
local PUBLIC = {
  "GET /health", "GET /v1/health", "GET /metrics", "GET /v1/node", "GET /v1/chains", "GET /v1/chain/{chain}/head",
  "GET /v1/chain/{chain}/blocks/{id}", "GET /v1/chain/{chain}/transactions/{id}",
  "POST /v1/chain/{chain}/transactions", "GET /v1/chain/{chain}/accounts/{id}",
  "GET /v1/chain/{chain}/accounts/{id}/transactions", "GET /v1/marketplace/offers", "GET /v1/marketplace/pricing",
  "GET /v1/marketplace/pricing/{model}",
}

local QUERY_NAMES = { "limit", "offset", "state", "model", "min_vram", "max_price", "days", "sort", "available", "region",
  "miner_id", "role", "key_id", "after", "wait" }

local mutate_table

-- A transaction, sometimes mutated before it is signed (so that hostile
-- fields get past the signature check to the ledger's rules).
local function signed(state, r, tx)
  if r.chance(0.4) then mutate_table(r, tx, 2) end
  local ok, hash = pcall(chain.hash, tx)
  local sig = chain.sign(ok and hash or "x", state.wallet.secret)
  if r.chance(0.1) then sig = r.pick { "", "x", sig:sub(2), 5 } end
  return { tx = tx, signature = sig }
end

local function tx_of(state, r, kind, payload)
  return { chain_id = "ait-devnet", type = kind, from = state.wallet.address, public_key = crypto.hex(state.wallet.public),
    nonce = r.int(3), payload = payload, timestamp = os.time() }
end

local TEMPLATES = {
  ["POST /v1/jobs"] = function(_, r)
    return { payload = { prompt = "fuzz", options = { temperature = 0.5 } }, model = r.pick { "llama3", "fuzz" },
      ttl_seconds = r.pick { 60, 900 }, constraints = { min_vram_gb = 8, gpu = "RTX", region = "eu", models = { "llama3" },
        max_price = "1.5" } }
  end,
  ["POST /v1/miners/register"] = function(state, r)
    return { miner_id = r.pick { "fuzz-m1", "fuzz-m2", state.miner_id }, capabilities = { gpus = { { name = "RTX 4090",
      memory_gb = 24, count = 1 } }, models = { "llama3" }, cpu = { cores = 4 }, memory = { gb = 16 } },
      price_per_hour = "0.5", payout_address = state.wallet.address, concurrency = 2, region = "eu" }
  end,
  ["POST /v1/miners/heartbeat"] = function() return { status = "ONLINE", inflight = 0 } end,
  ["POST /v1/miners/poll"] = function() return { max_wait_seconds = 0 } end,
  ["POST /v1/miners/{id}/result"] = function()
    return { result = { response = "ok", eval_count = 3 }, metrics = { eval_count = 3, prompt_eval_count = 2 } }
  end,
  ["POST /v1/miners/{id}/fail"] = function() return { error_code = "OOM", error_message = "out of memory", metrics = {} } end,
  ["POST /v1/jobs/{id}/cancel"] = function() return nil end,
  ["POST /v1/jobs/{id}/payment"] = function(state, r)
    return signed(state, r, tx_of(state, r, "escrow_lock", { job_id = state.job_id, amount = "1000" }))
  end,
  ["POST /v1/chain/{chain}/transactions"] = function(state, r)
    local kind = r.pick { "transfer", "stake", "unstake", "escrow_lock", "faucet", "escrow_release" }
    local one = signed(state, r, tx_of(state, r, kind, { to = state.address, amount = r.pick { "1", "1000", "0" },
      job_id = state.job_id }))
    if r.chance(0.2) then return { transactions = { one, signed(state, r, tx_of(state, r, "transfer",
      { to = state.address, amount = "2" })) } } end
    return one
  end,
  ["POST /v1/chain/{chain}/faucet"] = function(state) return { address = state.address, amount = "1" } end,
  ["POST /v1/chain/{chain}/blocks"] = function() return nil end,
  ["POST /v1/marketplace/gpu/register"] = function(state, r)
    local gpu = { model = "RTX 4090", vram_gb = 24, hourly_rate = "0.5", count = 1, region = "eu",
      payout_address = state.wallet.address }
    return r.chance(0.3) and { gpu = gpu } or gpu
  end,
  ["PATCH /v1/marketplace/gpu/{id}"] = function()
    return { hourly_rate = "0.7", status = "paused", count = 2, region = "us", vram_gb = 48 }
  end,
  ["POST /v1/admin/keys"] = function(_, r)
    return { role = r.pick { "client", "miner" }, name = "fuzz", environment = "fuzz", expires_in_days = 1 }
  end,
  ["POST /v1/admin/keys/{id}/revoke"] = function() return { reason = "fuzz" } end,
}

-- Real values for path parameters (so requests reach past the 404s).
local function path_value(state, r, route, name)
  if name == "chain" then return "ait-devnet" end
  if name == "model" then return http.escape(r.pick { "RTX 4090", "rtx 4090", "A100" }) end
  if route:find("/jobs/", 1, true) or route:find("/miners/", 1, true) then
    return r.pick { state.job_id, state.running_id, state.done_id }
  end
  if route:find("/gpu/", 1, true) then return state.listing_id end
  if route:find("/keys/", 1, true) then return state.spare_key_id end
  if route:find("/accounts/", 1, true) then return r.pick { state.address, state.wallet.address } end
  if route:find("/blocks/", 1, true) then return r.pick { "0", "1", "latest" } end
  if route:find("/transactions/", 1, true) then return state.tx_hash end
  return "x"
end

-- Mutates a decoded body in place: one field (maybe nested) replaced,
-- removed or added.
function mutate_table(r, t, depth)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local k = #keys > 0 and r.pick(keys)
  local v = k and t[k]
  if type(v) == "table" and r.chance(0.5) then return mutate_table(r, v, depth + 1) end
  local what = r.int(8)
  if what == 1 and k then
    t[k] = nil
  elseif what == 2 or not k then
    t[r.chance(0.5) and r.pick(STRINGS) or r.pick { "payload", "result", "tx", "miner_id", "constraints" }] = hostile(r, depth)
  else
    t[k] = hostile(r, depth)
  end
end

local function body_text(r, body)
  if r.chance(0.06) then return r.pick { "", "{", "[]", "[1]", "null", '"text"', "42", "NaN", "{}{}", "\xff",
    nested(64, "[", "]", ""), nested(40, "[", "]", ""), "{" .. string.rep('"a":1,', 2000) .. '"a":1}' } end
  if body == nil then body = r.chance(0.5) and {} or nil end
  if body == nil then return nil end
  for _ = 1, r.pick { 0, 1, 1, 1, 2, 3 } do mutate_table(r, body, 1) end
  local ok, text = pcall(json.encode, body)
  if not ok then return "{}" end
  text = unraw(text)
  local cut = r.int(20)
  if cut == 1 then
    text = text:sub(1, r.int(#text)) -- truncated
  elseif cut == 2 then
    local at = r.int(#text)
    text = text:sub(1, at) .. r.pick { "\xff", "\xc3", "\xed\xa0\x80", "\0", "\\" } .. text:sub(at + 1)
  end
  return text
end

local function hostile_segment(r)
  return r.pick { "%FF", "%C0%AF", "%ED%A0%80", "..", "%2e%2e", string.rep("x", 3000), "%00", "-", "_", ".", "%20",
    http.escape("\u{1F600}"), "0", "latest", "ait-healthchain", "AIT1ABC", string.rep("f", 32) }
end

local function build_path(state, r, route)
  local path = route:gsub("{(%w+)}", function(name)
    if r.chance(0.85) then return path_value(state, r, route, name) end
    return hostile_segment(r)
  end)
  local how = r.int(30)
  if how == 1 then path = path .. "/" elseif how == 2 then path = path:gsub("^/v1/", "/api/v1/")
  elseif how == 3 then path = path .. "/" .. hostile_segment(r) elseif how == 4 then path = path:upper()
  elseif how == 5 then path = path:gsub("/", "//", 1) end
  if r.chance(0.25) then
    local parts = {}
    for i = 1, r.int(3) do
      local name = r.chance(0.9) and r.pick(QUERY_NAMES) or hostile_segment(r)
      local value = r.chance(0.3) and r.pick { "10", "0", "1", "QUEUED", "price", "all", "0.5" } or
        (r.chance(0.5) and http.escape(r.pick(STRINGS)) or http.escape(r.pick(NUMBERS)))
      parts[i] = name .. "=" .. value
    end
    path = path .. "?" .. table.concat(parts, "&")
  end
  return path
end

local METHODS = { "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }

--- The i-th request of a seed: {method, url, headers, body, route}.
function M.request(state, seed, i)
  local r = generator(seed * 1000003 + i)
  local route = r.pick(state.routes)
  local method, pattern = route.name:match("^(%S+) (.*)$")
  if r.chance(0.05) then method = r.pick(METHODS) end
  local headers = {}
  local who = r.int(20)
  local key
  if who <= 14 then key = route.roles and state.keys[r.pick(route.roles)] -- a role the route allows
  elseif who <= 17 then key = state.keys[r.pick { "client", "miner", "admin" }] -- maybe the wrong one
  elseif who == 18 then key = r.pick { "", "aitbc_client_0000000000000000000000", string.rep("k", 5000), "\xff\xfe" }
  elseif who == 19 then key = state.keys.revoked end
  headers["X-Api-Key"] = key
  if r.chance(0.2) then headers["X-Miner-ID"] = r.chance(0.5) and state.miner_id or r.pick(STRINGS) end
  if r.chance(0.05) then headers["X-Request-ID"] = r.pick(STRINGS) end
  headers["Content-Type"] = r.chance(0.9) and "application/json" or r.pick { "text/plain", "", "application/json; charset=latin1" }
  for k, v in pairs(headers) do -- header values cannot carry line breaks or NUL (curl would split the request)
    if type(v) == "string" and v:find("[\r\n%z]") then headers[k] = nil end
  end
  local template = TEMPLATES[route.name]
  local body
  if method ~= "GET" and method ~= "OPTIONS" then body = body_text(r, template and template(state, r)) end
  -- a valid long-poll would hold the batch for its whole wait
  if route.name == "POST /v1/miners/poll" and body then
    local decoded = json.decode(body)
    if type(decoded) == "table" and type(decoded.max_wait_seconds) == "number" and decoded.max_wait_seconds > 0
      and decoded.max_wait_seconds <= 3600 then
      body = body:gsub('"max_wait_seconds":[^,}]*', '"max_wait_seconds":0')
    end
  end
  return { method = method, url = state.url .. build_path(state, r, pattern), headers = headers, body = body,
    route = route.name, timeout = 10 }
end

-- ---- the state requests refer to ----

local function call(url, method, path, key, body)
  local res, err = http.request { method = method, url = url .. path, headers = { ["X-Api-Key"] = key }, json = body,
    timeout = 20 }
  assert(res, err)
  assert(res.status < 300, method .. " " .. path .. " -> " .. res.status .. " " .. res.body)
  return res.json
end

--- Keys of each role, a miner, jobs in each state, a listing, a funded
-- wallet and a transaction: what valid requests point at.
function M.prepare(url, admin_key)
  local state = { url = url, keys = { admin = admin_key } }
  local function key(role) return call(url, "POST", "/v1/admin/keys", admin_key, { role = role }) end
  state.keys.client, state.keys.miner = key("client").key, key("miner").key
  state.keys.admin = key("admin").key
  state.spare_key_id = key("client").key_id
  local revoked = key("client")
  call(url, "DELETE", "/v1/admin/keys/" .. revoked.key_id, admin_key)
  state.keys.revoked = revoked.key
  state.miner_id = "fuzz-miner-" .. crypto.hex(crypto.random(4))
  call(url, "POST", "/v1/miners/register", state.keys.miner, { miner_id = state.miner_id,
    capabilities = { models = { "fuzz" } } })
  local function job() return call(url, "POST", "/v1/jobs", state.keys.client, { payload = { prompt = "fuzz" }, model = "fuzz" }).job_id end
  state.done_id = job()
  local claimed = call(url, "POST", "/v1/miners/poll", state.keys.miner, { max_wait_seconds = 0 })
  call(url, "POST", "/v1/miners/" .. claimed.job_id .. "/result", state.keys.miner, { result = { ok = true } })
  state.running_id = job()
  call(url, "POST", "/v1/miners/poll", state.keys.miner, { max_wait_seconds = 0 })
  state.job_id = job()
  state.listing_id = call(url, "POST", "/v1/marketplace/gpu/register", state.keys.miner,
    { model = "RTX 4090", vram_gb = 24, hourly_rate = "0.5" }).listing_id
  local public, secret = crypto.sign_keypair()
  state.wallet = { public = public, secret = secret, address = wallet.address(public) }
  state.address = wallet.address((crypto.sign_keypair()))
  state.tx_hash = call(url, "POST", "/v1/chain/ait-devnet/faucet", state.keys.client,
    { address = state.wallet.address, amount = "100" }).hash
  -- every route: the public ones, and what each role may do (whoami)
  local routes, seen = {}, {}
  for _, name in ipairs(PUBLIC) do
    routes[#routes + 1], seen[name] = { name = name }, true
  end
  for _, role in ipairs { "client", "miner", "admin" } do
    for _, name in ipairs(call(url, "GET", "/v1/auth/whoami", state.keys[role]).permissions) do
      if not seen[name] then
        seen[name] = { name = name, roles = {} }
        routes[#routes + 1] = seen[name]
      end
      table.insert(seen[name].roles, role)
    end
  end
  state.routes = routes
  return state
end

-- ---- running ----

local function failure(res)
  if res.error then
    if res.kind == "url" then return nil end -- curl would not send it: not the node's doing
    return "no answer (" .. tostring(res.kind) .. ": " .. tostring(res.error) .. ")"
  end
  if res.status >= 500 then return "answered " .. res.status .. ": " .. res.body:sub(1, 300) end
  if (res.headers["content-type"] or ""):find("json", 1, true) and not utf8.len(res.body) then
    return "answered JSON that is not UTF-8"
  end
  return nil
end

local function describe(req)
  local body = req.body and (#req.body > 200 and req.body:sub(1, 200) .. "..." or req.body) or ""
  return string.format("%s %s body=%q", req.method, #req.url > 300 and req.url:sub(1, 300) .. "..." or req.url, body)
end

--- Sends `count` requests of `seed` (`concurrency` at a time, at most
-- budget_s seconds), then checks /health.  Returns {sent, statuses,
-- failures = {"#i ...", ...}, alive}.
function M.run(opts)
  local state = opts.state or M.prepare(opts.url, opts.admin_key)
  local seed, count, concurrency = opts.seed, opts.count or 2000, opts.concurrency or 16
  local deadline = sys.monotonic() + (opts.budget_s or 60)
  local report = { seed = seed, sent = 0, statuses = {}, failures = {}, routes = {} }
  local i = 0
  while i < count and sys.monotonic() < deadline do
    local batch = {}
    for j = 1, math.min(concurrency, count - i) do batch[j] = M.request(state, seed, i + j) end
    local results = http.request_many(batch)
    for j, res in ipairs(results) do
      local req = batch[j]
      report.sent = report.sent + 1
      report.routes[req.route] = true
      if res.status then report.statuses[res.status] = (report.statuses[res.status] or 0) + 1 end
      local why = failure(res)
      if why then report.failures[#report.failures + 1] = string.format("#%d %s: %s", i + j, describe(req), why) end
    end
    i = i + #batch
    local answered = false
    for _, res in ipairs(results) do answered = answered or res.status ~= nil end
    if not answered then break end -- the node stopped answering: no use waiting out more timeouts
  end
  local health = http.request { url = opts.url .. "/health", timeout = 10 }
  report.alive = health ~= nil and health.status == 200 and health.json ~= nil and health.json.status == "ok"
  report.route_count = #state.routes
  return report
end

--- A seed for a run (AITBC_FUZZ_SEED replays one).
function M.seed()
  local given = os.getenv("AITBC_FUZZ_SEED")
  if given then return assert(math.tointeger(tonumber(given)), "AITBC_FUZZ_SEED must be a whole number") end
  return string.unpack("<I4", crypto.random(4))
end

return M
