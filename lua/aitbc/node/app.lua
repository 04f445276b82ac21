--- The node's HTTP application: routing, authentication, JSON errors,
-- audit, metrics and logs around the handlers in jobs.lua and admin.lua.
-- Each server worker state calls factory(config_json) once and then the
-- returned handle(request) for every request.
local admin = require "aitbc.node.admin"
local agentcomm = require "aitbc.node.agentcomm"
local agents = require "aitbc.node.agents"
local events = require "aitbc.node.events"
local explorer = require "aitbc.node.explorer"
local apikey = require "aitbc.protocol.apikey"
local crypto = require "aitbc.crypto"
local jobs = require "aitbc.node.jobs"
local market = require "aitbc.node.marketplace"
local ops = require "aitbc.node.ops_api"
local optimize = require "aitbc.node.optimize"
local peers = require "aitbc.node.peers"
local services = require "aitbc.node.services"
local chain = require "aitbc.node.chain"
local governance = require "aitbc.node.governance"
local rental = require "aitbc.node.rental"
local json = require "aitbc.json"
local log = require "aitbc.node.log"
local payments = require "aitbc.node.payments"
local store_mod = require "aitbc.node.store"
local swarm = require "aitbc.node.swarm"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local PUBLIC, CLIENT, MINER, ADMIN = nil, { client = true, admin = true }, { miner = true }, { admin = true }
local ANY = { client = true, miner = true, admin = true }

-- method, path pattern, roles allowed (nil: no key needed), handler
local ROUTES = {
  { "GET", "/health", PUBLIC, "health" },
  { "GET", "/v1/health", PUBLIC, "health" },
  { "GET", "/metrics", PUBLIC, "metrics" },
  { "GET", "/v1/node", PUBLIC, "node_info" },
  { "POST", "/v1/jobs", CLIENT, jobs.submit },
  { "GET", "/v1/jobs", CLIENT, jobs.list },
  { "GET", "/v1/jobs/{id}", CLIENT, jobs.get },
  { "GET", "/v1/jobs/{id}/result", CLIENT, jobs.result },
  { "GET", "/v1/jobs/{id}/receipt", CLIENT, jobs.receipt },
  { "POST", "/v1/jobs/{id}/cancel", CLIENT, jobs.cancel },
  { "GET", "/v1/jobs/{id}/events", CLIENT, function(ctx, id) return events.get(ctx, id, jobs.own_job) end },
  { "POST", "/v1/jobs/{id}/payment", CLIENT, chain.pay_job },
  { "GET", "/v1/jobs/{id}/payment", CLIENT, payments.of_job },
  { "POST", "/v1/payments", CLIENT, payments.create },
  { "GET", "/v1/payments/{id}", CLIENT, payments.get },
  { "GET", "/v1/payments/{id}/receipt", CLIENT, payments.receipt },
  { "POST", "/v1/payments/{id}/refund", CLIENT, payments.refund },
  { "POST", "/v1/payments/{id}/release", CLIENT, payments.release },
  { "GET", "/v1/explorer/blocks", PUBLIC, explorer.blocks },
  { "GET", "/v1/explorer/receipts", ANY, explorer.receipts },
  { "POST", "/v1/miners/register", MINER, jobs.register },
  { "POST", "/v1/miners/heartbeat", MINER, jobs.heartbeat },
  { "POST", "/v1/miners/poll", MINER, jobs.poll },
  { "GET", "/v1/miners/me", MINER, jobs.me },
  { "GET", "/v1/miners/jobs", MINER, jobs.miner_jobs },
  { "POST", "/v1/miners/{id}/result", MINER, jobs.submit_result },
  { "POST", "/v1/miners/{id}/fail", MINER, jobs.submit_failure },
  { "POST", "/v1/miners/{id}/events", MINER, function(ctx, id) return events.post(ctx, id, jobs.current_miner(ctx)) end },
  { "POST", "/v1/agents", CLIENT, agents.create },
  { "GET", "/v1/agents", CLIENT, agents.list },
  { "GET", "/v1/agents/{id}", CLIENT, agents.show },
  { "PATCH", "/v1/agents/{id}", CLIENT, agents.update },
  { "DELETE", "/v1/agents/{id}", CLIENT, agents.delete },
  { "GET", "/v1/agents/{id}/versions", CLIENT, agents.versions },
  { "POST", "/v1/agents/{id}/rollback", CLIENT, agents.rollback },
  { "POST", "/v1/agents/{id}/execute", CLIENT, agents.execute },
  { "GET", "/v1/agents/{id}/inputs", CLIENT, optimize.agent_inputs },
  { "GET", "/v1/optimize/history", CLIENT, optimize.history },
  { "GET", "/v1/optimize/models", CLIENT, optimize.models },
  { "POST", "/v1/admin/history/import", ADMIN, optimize.import },
  { "GET", "/v1/auth/whoami", ANY, admin.whoami },
  { "GET", "/v1/peers", PUBLIC, peers.list },
  { "POST", "/v1/swarm/members", CLIENT, swarm.join },
  { "DELETE", "/v1/swarm/members", CLIENT, swarm.leave },
  { "GET", "/v1/swarm/members", CLIENT, swarm.members },
  { "POST", "/v1/swarm/tasks", CLIENT, swarm.create },
  { "GET", "/v1/swarm/tasks/{id}", CLIENT, swarm.show },
  { "POST", "/v1/swarm/tasks/{id}/coordinate", CLIENT, swarm.coordinate },
  { "GET", "/v1/swarm/tasks/{id}/consensus", CLIENT, swarm.consensus },
  { "POST", "/v1/agent-comm/agents", CLIENT, agentcomm.register },
  { "GET", "/v1/agent-comm/agents", PUBLIC, agentcomm.discover },
  { "GET", "/v1/agent-comm/chains/{chain}/agents/{id}", PUBLIC, agentcomm.agent },
  { "POST", "/v1/agent-comm/directory", PUBLIC, agentcomm.directory_put },
  { "POST", "/v1/agent-comm/messages", CLIENT, agentcomm.send },
  { "GET", "/v1/agent-comm/messages/{id}", PUBLIC, agentcomm.status },
  { "POST", "/v1/agent-comm/relay", PUBLIC, agentcomm.relay_in },
  { "GET", "/v1/agent-comm/inbox", PUBLIC, agentcomm.inbox },
  { "POST", "/v1/admin/peers", ADMIN, peers.add },
  { "DELETE", "/v1/admin/peers", ADMIN, peers.remove },
  { "GET", "/v1/chains", PUBLIC, chain.chains },
  { "GET", "/v1/chain/{chain}/head", PUBLIC, chain.head },
  { "GET", "/v1/chain/{chain}/blocks/{id}", PUBLIC, chain.block },
  { "POST", "/v1/chain/{chain}/blocks", ADMIN, chain.seal },
  { "GET", "/v1/chain/{chain}/transactions/{id}", PUBLIC, chain.tx },
  { "POST", "/v1/chain/{chain}/transactions", PUBLIC, chain.submit },
  { "GET", "/v1/chain/{chain}/accounts/{id}", PUBLIC, chain.account },
  { "GET", "/v1/chain/{chain}/accounts/{id}/transactions", PUBLIC, chain.history },
  { "POST", "/v1/chain/{chain}/faucet", ANY, chain.faucet },
  { "GET", "/v1/chain/{chain}/params", PUBLIC, governance.get_params },
  { "GET", "/v1/chain/{chain}/proposals", PUBLIC, governance.list },
  { "GET", "/v1/chain/{chain}/proposals/{id}", PUBLIC, governance.show },
  { "GET", "/v1/chain/{chain}/proposals/{id}/votes", PUBLIC, governance.votes },
  { "POST", "/v1/marketplace/gpu/register", MINER, market.register },
  { "GET", "/v1/marketplace/gpu/list", PUBLIC, market.list },
  { "GET", "/v1/marketplace/gpu/mine", MINER, market.list_own },
  { "GET", "/v1/marketplace/gpu/{id}", PUBLIC, market.details },
  { "POST", "/v1/marketplace/gpu/{id}/book", CLIENT, rental.book },
  { "POST", "/v1/marketplace/gpu/{id}/release", CLIENT, rental.release_listing },
  { "GET", "/v1/marketplace/gpu/{id}/reviews", PUBLIC, market.reviews },
  { "POST", "/v1/marketplace/gpu/{id}/reviews", CLIENT, market.review },
  { "GET", "/v1/marketplace/orders", ANY, rental.orders },
  { "GET", "/v1/marketplace/bookings/{id}", ANY, rental.show },
  { "POST", "/v1/marketplace/bookings/{id}/release", CLIENT, rental.release },
  { "POST", "/v1/marketplace/bids", CLIENT, rental.bid },
  { "GET", "/v1/marketplace/bids", ANY, rental.bids },
  { "GET", "/v1/marketplace/bids/{id}", ANY, rental.bid_show },
  { "POST", "/v1/marketplace/bids/{id}/accept", MINER, rental.bid_accept },
  { "POST", "/v1/marketplace/bids/{id}/cancel", CLIENT, rental.bid_cancel },
  { "PATCH", "/v1/marketplace/gpu/{id}", MINER, market.update },
  { "DELETE", "/v1/marketplace/gpu/{id}", MINER, market.remove },
  { "GET", "/v1/marketplace/offers", PUBLIC, market.offers },
  { "GET", "/v1/marketplace/pricing", PUBLIC, market.pricing },
  { "GET", "/v1/marketplace/pricing/{model}", PUBLIC, market.pricing },
  { "POST", "/v1/admin/keys", ADMIN, admin.create_key },
  { "GET", "/v1/admin/keys", ADMIN, admin.list_keys },
  { "DELETE", "/v1/admin/keys/{id}", ADMIN, admin.revoke_key },
  { "POST", "/v1/admin/keys/{id}/revoke", ADMIN, admin.revoke_key },
  { "GET", "/v1/admin/stats", ADMIN, admin.stats },
  { "GET", "/v1/admin/jobs", ADMIN, admin.jobs },
  { "GET", "/v1/admin/miners", ADMIN, admin.miners },
  { "GET", "/v1/admin/audit", ADMIN, admin.audit },
}
for _, r in ipairs(ops.ROUTES) do ROUTES[#ROUTES + 1] = { r[1], r[2], ADMIN, r[3] } end -- node operations
for _, r in ipairs(ROUTES) do
  r.name = r[1] .. " " .. r[2]
  r.service = services.of(r[2]) -- a service restarting holds its requests
  r.pattern = "^" .. r[2]:gsub("%-", "%%-"):gsub("{id}", "([%%w_%%-%%.]+)"):gsub("{chain}", "([%%w_%%-%%.]+)")
    :gsub("{model}", "([^/]+)") .. "$"
end

--- What each role may do (for whoami and `aitbc auth test`).
local function permissions(role)
  local out = json.array()
  for _, r in ipairs(ROUTES) do
    if r[3] and r[3][role] then out[#out + 1] = r.name end
  end
  return out
end

local AUDIT_PATH_MAX = 256 -- bytes of a request path kept in the audit log and node.log

local READ_HEADERS = { "x-api-key", "x-miner-id", "x-request-id", "content-type", "accept", "last-event-id" }

local BUCKETS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 }

local function match(method, path)
  local allowed
  for _, r in ipairs(ROUTES) do
    local captures = table.pack(path:match(r.pattern))
    if captures[1] then
      if r[1] == method then return r, r[2]:find("{", 1, true) and captures or nil end
      allowed = allowed or {}
      allowed[#allowed + 1] = r[1]
    end
  end
  return nil, allowed
end

local function error_body(status, code, message, field, request_id)
  return { error = { code = code, message = message, field = field, status = status, request_id = request_id },
    detail = message }
end

return function(config_text)
  local config = assert(json.decode(config_text), "node config is not JSON")
  local store = assert(store_mod.open(config.db_path))
  local logger = log.open(config.log_path, config.log_level, "coordinator")
  local loggers = {} -- each service's lines name it
  for _, name in ipairs(services.NAMES) do loggers[name] = log.open(config.log_path, config.log_level, name) end
  local node_key = util.read_node_key(config.node_key_path)
  local function flush_audit()
    if not store:audit_sync(5) then logger:warn("audit rows are not written yet; the report may lack the newest") end
    if not store:audit_refused_sync(5) then logger:warn("refused requests are not counted yet") end
  end

  local function authenticate(ctx, route)
    local key = ctx.headers["x-api-key"]
    if not key or key == "" then
      util.fail(401, "missing_api_key", "this endpoint needs an API key in the X-Api-Key header")
    end
    local key_id, hash = apikey.identity(key)
    ctx.audit_key_id = key_id
    local k = store:key_get(key_id)
    if not k or not crypto.equal(k.hash, hash) then util.fail(401, "invalid_api_key", "invalid api key") end
    ctx.audit_role = k.role
    if k.revoked_at then util.fail(401, "api_key_revoked", "this API key was revoked at " .. util.iso(k.revoked_at)) end
    if k.expires_at and k.expires_at <= ctx.now then
      util.fail(401, "api_key_expired", "this API key expired at " .. util.iso(k.expires_at))
    end
    if k.user_status == "suspended" then -- all of a suspended user's keys, at once
      util.fail(403, "user_suspended", "the user of this API key (" .. tostring(k.user_name) .. ") is suspended")
    end
    if not route[3][k.role] then
      local roles = {}
      for role in pairs(route[3]) do roles[#roles + 1] = role end
      table.sort(roles)
      util.fail(403, "forbidden", string.format("a %s key may not use %s (needs a %s key)", k.role, route.name,
        table.concat(roles, " or ")))
    end
    ctx.key = k
  end

  local builtin = {}

  -- Probes are polled often: one index seek per chain, no table scans.
  local function chain_heights()
    local heights = {}
    for _, c in ipairs(config.chains or {}) do heights[c] = store:chain_height(c) end
    return heights
  end

  --- A follower's chains: {leader, chains = [{chain_id, state, height,
  -- refused_height, reason, since}]}, and whether one stopped following; a
  -- leader's, the peers' chains it follows (aitbc serve --peer), nil if none.
  local function following(heights)
    local out, halted = { leader = config.follow, chains = json.array() }, false
    for c, f in pairs(chain.follow_states(store)) do
      out.chains[#out.chains + 1] = { chain_id = c, state = f.state, height = heights[c] or store:chain_height(c),
        refused_height = f.refused_height, reason = f.reason, since = f.since }
      halted = halted or f.state == "halted"
    end
    table.sort(out.chains, function(a, b) return a.chain_id < b.chain_id end)
    if not config.follow and #out.chains == 0 then return nil, halted end
    return out, halted
  end

  function builtin.health(ctx)
    local ok, heights = pcall(chain_heights)
    local follow, halted
    if ok then ok, follow, halted = pcall(following, heights) end
    -- a release built to fail (make variant HEALTH_FAULT=1) fails here, for the update tests
    local fault = sys.build_fault == "health" and "this binary was built with HEALTH_FAULT=1" or nil
    local healthy = ok and not halted and not fault
    local states = services.states()
    states.coordinator, states.storage = ok and states.coordinator or "unavailable", ok and "ok" or "unavailable"
    states.chain = not ok and "unavailable" or halted and "halted" or "ok"
    return healthy and 200 or 503, {
      status = fault and "failing" or healthy and "ok" or "degraded", reason = fault, version = sys.version,
      env = config.environment, uptime_seconds = math.floor(ctx.now - config.started_at), pid = sys.getpid(),
      services = states, node_key = node_key.id, chains = ok and heights or {}, following = ok and follow or nil,
    }
  end

  function builtin.node_info()
    return 200, { version = sys.version, node_key = node_key.id, key_alg = "Ed25519",
      started_at = util.iso(config.started_at), schema_version = store_mod.SCHEMA_VERSION }
  end

  function builtin.metrics(ctx)
    local lines = {}
    local function add(s) lines[#lines + 1] = s end
    local counters = sys.counters()
    local names = {}
    for k in pairs(counters) do names[#names + 1] = k end
    table.sort(names)
    add("# HELP aitbc_requests_total HTTP requests by route and status.")
    add("# TYPE aitbc_requests_total counter")
    for _, k in ipairs(names) do
      local route, status = k:match("^req|(.-)|(%d+)$")
      if route then add(string.format('aitbc_requests_total{route="%s",status="%s"} %d', route, status, counters[k])) end
    end
    add("# HELP aitbc_request_duration_seconds Request latency by route.")
    add("# TYPE aitbc_request_duration_seconds histogram")
    local routes = {}
    for _, k in ipairs(names) do
      local route = k:match("^lat_count|(.*)$")
      if route then routes[#routes + 1] = route end
    end
    for _, route in ipairs(routes) do
      local cumulative = 0
      for i, le in ipairs(BUCKETS) do
        cumulative = cumulative + (counters["lat|" .. route .. "|" .. i] or 0)
        add(string.format('aitbc_request_duration_seconds_bucket{route="%s",le="%s"} %d', route, le, cumulative))
      end
      add(string.format('aitbc_request_duration_seconds_bucket{route="%s",le="+Inf"} %d', route, counters["lat_count|" .. route]))
      add(string.format('aitbc_request_duration_seconds_sum{route="%s"} %.6f', route, counters["lat_sum|" .. route] or 0))
      add(string.format('aitbc_request_duration_seconds_count{route="%s"} %d', route, counters["lat_count|" .. route]))
    end
    local by_state = store:jobs_by_state()
    add("# HELP aitbc_jobs Jobs by state.")
    add("# TYPE aitbc_jobs gauge")
    for _, s in ipairs { "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED" } do
      add(string.format('aitbc_jobs{state="%s"} %d', s, by_state[s] or 0))
    end
    add("# HELP aitbc_queue_depth Jobs waiting for a miner.")
    add("# TYPE aitbc_queue_depth gauge")
    add("aitbc_queue_depth " .. (by_state.QUEUED or 0))
    add("# HELP aitbc_miners_online Miners heard from within the heartbeat timeout.")
    add("# TYPE aitbc_miners_online gauge")
    add("aitbc_miners_online " .. store:miners_online(ctx.now - config.heartbeat_timeout))
    add("# TYPE aitbc_uptime_seconds gauge")
    add("aitbc_uptime_seconds " .. math.floor(ctx.now - config.started_at))
    local gauges = { http_connections = 0, http_waiting = 0 }
    for k, v in pairs(counters) do
      local name = k:match("^gauge|([%w_]+)|")
      if name and gauges[name] then gauges[name] = gauges[name] + v end
    end
    add("# HELP aitbc_http_connections Open client connections.")
    add("# TYPE aitbc_http_connections gauge")
    add("aitbc_http_connections " .. math.floor(gauges.http_connections))
    add("# HELP aitbc_http_waiting Long polls waiting for work.")
    add("# TYPE aitbc_http_waiting gauge")
    add("aitbc_http_waiting " .. math.floor(gauges.http_waiting))
    return 200, table.concat(lines, "\n") .. "\n", "text/plain; version=0.0.4"
  end

  local function body_object(ctx, optional)
    if ctx.body_table then return ctx.body_table end
    local text = ctx.req.body
    if text == "" then
      if optional then ctx.body_table = {} return ctx.body_table end
      util.fail(400, "missing_body", "this endpoint needs a JSON object body")
    end
    local value, err, where = json.decode(text, util.MAX_BODY_DEPTH)
    if value == nil then util.fail(400, "invalid_json", "request body: " .. tostring(err), where) end
    if type(value) ~= "table" or (json.is_array(value) and #value > 0) then
      util.fail(422, "validation_error", "request body must be a JSON object")
    end
    ctx.body_table = value
    return value
  end

  -- Text the node reads must be UTF-8 (Lua's utf8.len is strict: no
  -- overlong forms, surrogates or code points past U+10FFFF): refused at
  -- the door, before anything is matched, echoed or stored.
  -- Returns the field and what is not UTF-8, or nil.
  local function not_utf8(req)
    if not utf8.len(req.path) then return "path", "the request path" end
    for k, v in pairs(req.query) do
      if not utf8.len(k) then return "query", "a query parameter's name" end
      if not utf8.len(v) then return "query." .. k, "query parameter " .. k end
    end
    -- only the headers the node reads: a client's Latin-1 User-Agent is its own business
    for _, k in ipairs(READ_HEADERS) do
      local v = req.headers[k]
      if v and not utf8.len(v) then return "header." .. k, "header " .. k end
    end
    if not utf8.len(req.body) then return "body", "the request body" end
  end

  local function record(route_name, status, seconds)
    sys.counter_add("req|" .. route_name .. "|" .. status)
    local bucket = #BUCKETS + 1
    for i, le in ipairs(BUCKETS) do if seconds <= le then bucket = i break end end
    if bucket <= #BUCKETS then sys.counter_add("lat|" .. route_name .. "|" .. bucket) end
    sys.counter_add("lat_count|" .. route_name)
    sys.counter_add("lat_sum|" .. route_name, seconds)
  end

  --- Runs the route's handler: status, body, content type, Retry-After;
  -- errors become their JSON answer (an unexpected one a logged 500).
  local function dispatch(ctx, route, arg, bad_field, bad_what)
    local req, status, body, ctype = ctx.req, nil, nil, nil
    local ok, err = pcall(function()
      if bad_field then util.fail(400, "invalid_utf8", bad_what .. " is not valid UTF-8", bad_field) end
      if not route then
        if arg then
          util.fail(405, "method_not_allowed",
            req.method .. " is not allowed on " .. ctx.path .. " (use " .. table.concat(arg, ", ") .. ")")
        end
        util.fail(404, "not_found", "no such endpoint: " .. req.method .. " " .. ctx.path)
      end
      if route[3] then authenticate(ctx, route) end
      local handler = route[4]
      if type(handler) == "string" then handler = builtin[handler] end
      local service = route.service
      if service then
        local wait = services.enter(ctx, service, 30)
        if wait then
          status, body = util.SUSPEND, wait
          return
        end
        ctx.log = loggers[service]
        local hok, herr = pcall(function()
          status, body, ctype = handler(ctx, table.unpack(arg or {}, 1, arg and arg.n or 0))
        end)
        services.leave(service)
        if not hok then error(herr, 0) end
        return
      end
      status, body, ctype = handler(ctx, table.unpack(arg or {}, 1, arg and arg.n or 0))
    end)
    if ok then return status, body, ctype end
    if util.is_http_error(err) then
      body = error_body(err.status, err.code, err.message, err.field, ctx.request_id)
      body.error.limit, body.error.retry_after = err.limit, err.retry_after
      return err.status, body, nil, err.retry_after
    end
    logger:error("handler failed", { request_id = ctx.request_id, route = route and route.name, error = tostring(err),
      traceback = debug.traceback() })
    return 500, error_body(500, "internal", "internal server error", nil, ctx.request_id)
  end

  --- Audits a request to an authenticated route; returns the sequence
  -- number of its row when the answer must wait for it to be committed.
  -- What one request leaves on disk is bounded: the path is clipped, and
  -- refused requests (401) are counted per address, minute and outcome.
  local function audit(ctx, route, status, body, logged_path)
    if not (route and route[3]) then return nil end
    local req = ctx.req
    local row = { time = ctx.now, key_id = ctx.audit_key_id, role = ctx.audit_role, method = req.method,
      route = route.name, path = logged_path, status = status, remote = req.remote, request_id = ctx.request_id }
    if status ~= 401 then return store:audit_push(row) end
    row.key_id = ctx.audit_role and ctx.audit_key_id or nil -- a key this node knows, never an invented one
    row.outcome = type(body) == "table" and body.error and body.error.code or "refused"
    store:audit_refused_push(row)
  end

  --- The response the server sends: headers, body and the audit row it waits for.
  local function answer(status, body, ctype, headers, after)
    if status == 204 or body == nil then return { status = status, headers = headers, body = "", after = after } end
    if type(body) == "table" and type(body.stream) == "function" then -- a large body, chunk by chunk (backups)
      headers["Content-Type"] = ctype or "application/octet-stream"
      return { status = status, headers = headers, stream = body.stream, after = after }
    end
    if type(body) == "string" then
      headers["Content-Type"] = ctype or "text/plain"
      return { status = status, headers = headers, body = body, after = after }
    end
    headers["Content-Type"] = "application/json"
    if status == 401 then headers["WWW-Authenticate"] = 'ApiKey header="X-Api-Key"' end
    return { status = status, headers = headers, body = json.encode(body), after = after }
  end

  return function(req)
    local started = sys.monotonic()
    local request_id = req.headers["x-request-id"]
    if not request_id or not request_id:match("^[%w%-_]+$") or #request_id > 64 then request_id = util.new_id(8) end
    local bad_field, bad_what = not_utf8(req)
    local path = bad_field and "(not UTF-8)" or req.path:gsub("^/api/v1/", "/v1/"):gsub("/+$", "")
    if path == "" then path = "/" end
    local ctx = {
      req = req, headers = req.headers, query = req.query, now = sys.time(), request_id = request_id, path = path,
      store = store, log = logger, config = config, node_key = node_key, body_object = body_object,
      permissions = permissions, flush_audit = flush_audit,
    }
    local route, arg
    if not bad_field then route, arg = match(req.method, path) end
    if route and route.name == "GET /v1/chain/{chain}/head" and req.headers["x-aitbc-follower-height"] then
      ops.note_follower(ctx, arg[1]) -- a follower says how far it is (the leader's admin status)
    end
    local status, body, ctype, retry_after = dispatch(ctx, route, arg, bad_field, bad_what)
    -- a long poll waits without holding a worker, and is audited once, when it answers
    if status == util.SUSPEND then return { suspend = body.seconds, wake = body.wake } end
    local elapsed = sys.monotonic() - started
    record(route and route.name or "unmatched", status, elapsed)
    local logged_path = util.clip(path, AUDIT_PATH_MAX)
    local audited = audit(ctx, route, status, body, logged_path)
    if logger:enabled("info") then
      ctx.log:info("request", { request_id = request_id, method = req.method, path = logged_path, status = status,
        ms = math.floor(elapsed * 1e4 + 0.5) / 10, key_id = ctx.audit_key_id, remote = req.remote })
    end
    -- the answer leaves only once its audit row is committed
    local after = audited and { queue = store.audit_queue, seq = audited } or nil
    local headers = { ["X-Request-ID"] = request_id, ["Retry-After"] = retry_after and tostring(retry_after) }
    for k, v in pairs(ctx.reply_headers or {}) do headers[k] = v end -- a handler's own (X-Poll-Reason)
    return answer(status, body, ctype, headers, after)
  end
end
