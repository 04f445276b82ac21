--- Agent messages on the node (DESIGN.md §9): each chain's agent directory
-- lives on the node that hosts the chain; a node relays registrations,
-- discovery and messages for a peer's chain to that peer.  A message is
-- verified (the sender's signature, its key as registered on its own chain,
-- expiry, replays), stored in the target's inbox by the target chain's node,
-- and answered with a delivery receipt signed by that node's key.  A
-- message for a peer that does not answer waits in the outbox (retried with
-- backoff by the supervisor: M.flush_outbox) and shows `pending`.
local ac = require "aitbc.agentcomm"
local json = require "aitbc.json"
local peers = require "aitbc.node.peers"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = { RELAY_TIMEOUT = 3, MAX_BACKOFF = 30 }

local function peer_api(url)
  return require("aitbc.api").new { url = url, timeout = M.RELAY_TIMEOUT, retries = 0 }
end

--- Where chain_id lives: "self" or {url, node_key} | 404.
local function host(ctx, chain_id)
  local h = peers.host_of(ctx, chain_id)
  if not h then
    fail(404, "unknown_chain", "no node this one knows hosts " .. tostring(chain_id) .. " (this node hosts "
      .. table.concat(ctx.config.chains, ", ") .. "; peers: aitbc serve --peer URL)", "chain_id")
  end
  return h
end

--- A peer's refusal passed on as it was; a peer that does not answer: 502.
local function relay(url, method, path, opts)
  local data, err = peer_api(url):request(method, path, opts)
  if data then return data end
  if err.kind == "network" then
    fail(502, "peer_unreachable", "the node that hosts this chain (" .. url .. ") does not answer: " .. err.message)
  end
  fail(err.status or 502, err.code or "peer_refused", err.message, err.field)
end

-- ---- directory ----

local function reputation(row)
  local delivered, answered = row.delivered or 0, row.answered or 0
  return { score = math.floor((answered + 1) / (delivered + 2) * 1000 + 0.5) / 1000, delivered = delivered,
    answered = answered }
end

local function entry_view(ctx, row)
  return { agent_id = row.agent_id, chain_id = row.chain_id, capabilities = json.decode(row.capabilities),
    public_key = row.public_key, node = peers.self_url(ctx.store), node_key = ctx.node_key.id,
    registered_at = util.iso(row.registered_at), updated_at = util.iso(row.updated_at), reputation = reputation(row) }
end

--- Stores a signed registration for a chain hosted here.
local function register_here(ctx, record, signature, owner)
  if type(record) ~= "table" or record.kind ~= "agent_registration" then
    invalid("record", "must be an agent_registration")
  end
  local caps, why = ac.capabilities(record.capabilities)
  if not caps then invalid("record.capabilities", why) end
  if type(record.agent_id) ~= "string" or not record.agent_id:match("^[%w][%w_%-%.]*$") or #record.agent_id > 128 then
    invalid("record.agent_id", "must be an agent id")
  end
  if math.type(record.timestamp) ~= "integer" or math.abs(record.timestamp - ctx.now) > ac.CLOCK_SKEW then
    invalid("record.timestamp", "must be the time of signing (within 5 minutes of this node's clock)")
  end
  if not ac.verify(record, signature, record.public_key) then
    fail(400, "bad_signature", "the registration's signature does not verify with its public key", "signature")
  end
  local old = ctx.store:directory_get(record.chain_id, record.agent_id)
  if old and old.public_key ~= record.public_key then
    fail(409, "agent_key_mismatch", "agent " .. record.agent_id .. " is registered on " .. record.chain_id
      .. " with another key; only that key may change its registration", "record.public_key")
  end
  if old and record.timestamp < json.decode(old.record).timestamp then
    fail(409, "stale_registration", "a newer registration of " .. record.agent_id .. " is on record (a replay?)", "record")
  end
  ctx.store:directory_put { chain_id = record.chain_id, agent_id = record.agent_id, public_key = record.public_key,
    capabilities = json.encode(caps), owner_key_id = owner, record = json.encode(record), signature = signature,
    now = ctx.now }
  local row = ctx.store:directory_find(record.chain_id, nil, 100000)
  for _, r in ipairs(row) do
    if r.agent_id == record.agent_id then return r end
  end
end

--- POST /v1/agent-comm/agents {record, signature} (a client's; relayed for a peer's chain).
function M.register(ctx)
  local body = ctx:body_object()
  local record = body.record
  if type(record) ~= "table" then invalid("record", "is required: the signed agent_registration") end
  local h = host(ctx, record.chain_id)
  if h ~= "self" then
    local out = relay(h.url, "POST", "/v1/agent-comm/directory", { json = { record = record, signature = body.signature } })
    out.relayed_by = peers.self_url(ctx.store)
    return 201, out
  end
  return 201, entry_view(ctx, register_here(ctx, record, body.signature, ctx.key and ctx.key.key_id))
end

--- POST /v1/agent-comm/directory: a registration relayed by a peer (the agent's signature is what counts).
function M.directory_put(ctx)
  local body = ctx:body_object()
  local record = body.record
  if type(record) ~= "table" or host(ctx, record.chain_id) ~= "self" then
    fail(409, "not_hosted", "this node does not host " .. tostring(type(record) == "table" and record.chain_id), "record")
  end
  return 201, entry_view(ctx, register_here(ctx, record, body.signature, nil))
end

--- GET /v1/agent-comm/agents?chain_id=&capability=: ranked by reputation.
function M.discover(ctx)
  local chain_id = ctx.query.chain_id
  if not chain_id or chain_id == "" then invalid("chain_id", "is required: the chain whose agents to list") end
  local capability = ctx.query.capability ~= "" and ctx.query.capability or nil
  if capability then capability = capability:lower() end
  local h = host(ctx, chain_id)
  if h ~= "self" then
    if ctx.query.relayed then fail(508, "relay_loop", "a relayed discovery reached a node that does not host " .. chain_id) end
    local out = relay(h.url, "GET", "/v1/agent-comm/agents",
      { query = { chain_id = chain_id, capability = capability, relayed = "1" } })
    out.relayed_by = peers.self_url(ctx.store)
    return 200, out
  end
  local items = json.array()
  for _, r in ipairs(ctx.store:directory_find(chain_id, capability, 500)) do items[#items + 1] = entry_view(ctx, r) end
  table.sort(items, function(a, b)
    if a.reputation.score ~= b.reputation.score then return a.reputation.score > b.reputation.score end
    return a.agent_id < b.agent_id
  end)
  return 200, { chain_id = chain_id, capability = capability, node = peers.self_url(ctx.store),
    node_key = ctx.node_key.id, items = items }
end

--- GET /v1/agent-comm/chains/{chain}/agents/{id}: one registration (relayed for a peer's chain).
function M.agent(ctx, chain_id, agent_id)
  local h = host(ctx, chain_id)
  if h ~= "self" then
    if ctx.query.relayed then fail(508, "relay_loop", "a relayed look-up reached a node that does not host " .. chain_id) end
    return 200, relay(h.url, "GET", "/v1/agent-comm/chains/" .. chain_id .. "/agents/" .. agent_id,
      { query = { relayed = "1" } })
  end
  for _, r in ipairs(ctx.store:directory_find(chain_id, nil, 100000)) do
    if r.agent_id == agent_id then
      local v = entry_view(ctx, r)
      v.record, v.signature = json.decode(r.record), r.signature
      return 200, v
    end
  end
  fail(404, "agent_not_registered", "agent " .. agent_id .. " is not registered on " .. chain_id, "agent_id")
end

-- ---- messages ----

--- The envelope of a body, checked: its sender registered with its key on
-- its own chain (looked up there), not expired; -> env, message_id.
local function checked_envelope(ctx, body)
  local env = body.envelope
  local ok, field, why = ac.check_envelope(env, body.signature, ctx.now)
  if not ok then
    if field == "signature" then fail(400, "bad_signature", "the envelope's " .. field .. " " .. why, field) end
    invalid(field, why)
  end
  local sh = host(ctx, env.sender_chain)
  local sender
  if sh == "self" then
    sender = ctx.store:directory_get(env.sender_chain, env.sender)
  else
    local data, err = peer_api(sh.url):request("GET", "/v1/agent-comm/chains/" .. env.sender_chain .. "/agents/"
      .. env.sender, { query = { relayed = "1" } })
    if not data and err.kind == "network" then
      fail(502, "peer_unreachable", "cannot check the sender with " .. sh.url .. ": " .. err.message)
    end
    sender = data
  end
  if not sender then
    fail(403, "unknown_sender", "agent " .. env.sender .. " is not registered on " .. env.sender_chain
      .. " (aitbc agent-comm register)", "envelope.sender")
  end
  if sender.public_key ~= env.public_key then
    fail(403, "forged_sender", "the envelope is signed with another key than " .. env.sender .. "'s registered one",
      "envelope.public_key")
  end
  return env, ac.message_id(env)
end

local function row_of(env, message_id, signature, direction, status, now)
  return { message_id = message_id, direction = direction, sender = env.sender, sender_chain = env.sender_chain,
    target = env.target, target_chain = env.target_chain, envelope = json.encode(env), signature = signature,
    status = status, reply_to = env.reply_to, created_at = now, next_attempt_at = now }
end

--- Puts a checked message in the inbox of its target here; -> {receipt, signature}, new?
local function deliver_here(ctx, env, message_id, signature)
  if not ctx.store:directory_get(env.target_chain, env.target) then
    fail(404, "unknown_target", "agent " .. env.target .. " is not registered on " .. env.target_chain, "envelope.target")
  end
  local old = ctx.store:message_get(message_id, "in")
  if old then return json.decode(old.receipt), false end
  local receipt = ac.receipt(env, message_id, ctx.node_key.id, peers.self_url(ctx.store), ctx.now)
  local signed = { receipt = receipt, signature = ac.sign(receipt, ctx.node_key.secret) }
  local row = row_of(env, message_id, signature, "in", "delivered", ctx.now)
  row.receipt, row.delivered_at, row.next_attempt_at = json.encode(signed), ctx.now, nil
  if not ctx.store:message_insert(row) then return json.decode(ctx.store:message_get(message_id, "in").receipt), false end
  require("aitbc.sys").notify("inbox:" .. env.target_chain .. ":" .. env.target)
  return signed, true
end

--- POST /v1/agent-comm/relay {envelope, signature}: a peer's message for
-- an agent of a chain hosted here.  A known message id is a replay: 409
-- with the receipt it got (a sender's node retrying learns it arrived).
function M.relay_in(ctx)
  local body = ctx:body_object()
  local env, message_id = checked_envelope(ctx, body)
  if host(ctx, env.target_chain) ~= "self" then
    fail(409, "not_hosted", "this node does not host " .. env.target_chain, "envelope.target_chain")
  end
  local signed, new = deliver_here(ctx, env, message_id, body.signature)
  if not new then
    return 409, { error = { code = "replayed", status = 409, message = "message " .. message_id .. " was delivered "
      .. "already; it is not delivered twice" }, message_id = message_id, receipt = signed.receipt,
      signature = signed.signature }
  end
  return 201, { message_id = message_id, status = "delivered", receipt = signed.receipt, signature = signed.signature }
end

local function backoff(attempts) return math.min(M.MAX_BACKOFF, 0.5 * 2 ^ math.min(attempts, 10)) end

--- One relay attempt of an outbox row; -> "delivered" | "pending" | "failed".
local function attempt(store, row, chains, now)
  local env = json.decode(row.envelope)
  if env.expires <= now then
    store:message_update(row.message_id, "out", { status = "failed", last_error = "expired before it was delivered" })
    return "failed"
  end
  local h = peers.host_of({ store = store, config = { chains = chains } }, row.target_chain)
  local attempts = row.attempts + 1
  if not h or h == "self" then
    store:message_update(row.message_id, "out", { attempts = attempts, next_attempt_at = now + backoff(attempts),
      last_error = "no peer hosts " .. row.target_chain .. " now" })
    return "pending"
  end
  local req = { method = "POST", url = h.url .. "/v1/agent-comm/relay", headers = { ["Content-Type"] = "application/json" },
    body = json.encode { envelope = env, signature = row.signature }, timeout = M.RELAY_TIMEOUT }
  -- a kept-alive connection to a peer that restarted fails once: the relay is
  -- idempotent by message id, so it is sent again on a fresh one
  local res, rerr = require("aitbc.http").request(req)
  if not res then res, rerr = require("aitbc.http").request(req) end
  local answer = res and type(res.json) == "table" and res.json
  if answer and (res.status == 201 or (res.status == 409 and answer.message_id)) and answer.receipt then
    local ok = ac.check_receipt(answer, env, h.node_key)
    if ok then
      store:message_update(row.message_id, "out", { status = "delivered", attempts = attempts, relayed_to = h.url,
        delivered_at = now, receipt = json.encode { receipt = answer.receipt, signature = answer.signature } })
      return "delivered"
    end
  end
  if res and res.status >= 400 and res.status < 500 and res.status ~= 409 and res.status ~= 408 and res.status ~= 429 then
    local e = answer and answer.error or {}
    store:message_update(row.message_id, "out", { status = "failed", attempts = attempts, relayed_to = h.url,
      last_error = tostring(e.message or ("refused: HTTP " .. res.status)) })
    return "failed"
  end
  store:message_update(row.message_id, "out", { attempts = attempts, next_attempt_at = now + backoff(attempts),
    relayed_to = h.url, last_error = res and ("HTTP " .. res.status)
      or ("the peer " .. h.url .. " does not answer: " .. tostring(rerr)) })
  return "pending"
end

--- The supervisor's turn: outbox rows that are due; -> how many changed state.
function M.flush_outbox(node, logger, now)
  local n = 0
  for _, row in ipairs(node.store:outbox_due(now, 50)) do
    local ok, outcome = pcall(attempt, node.store, row, node.chains, now)
    if not ok then
      logger:error("relaying a message failed", { message_id = row.message_id, error = tostring(outcome) })
    elseif outcome ~= "pending" then
      n = n + 1
      require("aitbc.sys").notify("message:" .. row.message_id)
    end
  end
  return n
end

local function message_view(row)
  local env = json.decode(row.envelope)
  local r = row.receipt and json.decode(row.receipt)
  return { message_id = row.message_id, status = row.status, direction = row.direction, sender = row.sender,
    sender_chain = row.sender_chain, target = row.target, target_chain = row.target_chain, message = env.payload.message,
    reply_to = row.reply_to, session = env.session, created_at = util.iso(row.created_at),
    delivered_at = util.iso(row.delivered_at), attempts = row.attempts, last_error = row.last_error,
    next_attempt_at = row.status == "pending" and util.iso(row.next_attempt_at) or nil, relayed_to = row.relayed_to,
    receipt = r and r.receipt, receipt_signature = r and r.signature, envelope = env, signature = row.signature,
    read_at = util.iso(row.read_at) }
end

--- POST /v1/agent-comm/messages {envelope, signature}: accepted (transmitted),
-- then delivered here, relayed at once, or left in the outbox (pending).
function M.send(ctx)
  local body = ctx:body_object()
  local env, message_id = checked_envelope(ctx, body)
  if ctx.store:message_get(message_id) then
    fail(409, "replayed", "message " .. message_id .. " was sent already: a replayed envelope is refused", "envelope")
  end
  local h = host(ctx, env.target_chain)
  if h == "self" then
    local signed = deliver_here(ctx, env, message_id, body.signature)
    local row = row_of(env, message_id, body.signature, "out", "delivered", ctx.now)
    row.receipt, row.delivered_at, row.next_attempt_at = json.encode(signed), ctx.now, nil
    ctx.store:message_insert(row)
  else
    if not ctx.store:message_insert(row_of(env, message_id, body.signature, "out", "pending", ctx.now)) then
      fail(409, "replayed", "message " .. message_id .. " was sent already", "envelope")
    end
    attempt(ctx.store, ctx.store:message_get(message_id, "out"), ctx.config.chains, ctx.now)
  end
  return 202, message_view(ctx.store:message_get(message_id, "out"))
end

--- GET /v1/agent-comm/messages/{id}: where a message stands (?wait=S long-polls while pending).
function M.status(ctx, message_id)
  local row = ctx.store:message_get(message_id)
  if not row then fail(404, "message_not_found", "no message " .. message_id .. " on this node") end
  local wait = util.query_integer(ctx.query, "wait", 0, 60, 0)
  local left = wait - (ctx.req.waited or 0)
  if row.status == "pending" and left > 0.01 and ctx.req.resumed ~= "shutdown" then
    return util.SUSPEND, { seconds = left, wake = { "message:" .. message_id } }
  end
  return 200, message_view(row)
end

--- GET /v1/agent-comm/inbox?chain_id=&agent_id=&timestamp=&signature=: the
-- agent's messages, for whoever holds its key (a signed inbox_read).
function M.inbox(ctx)
  local q = ctx.query
  local chain_id, agent_id = q.chain_id, q.agent_id
  if not chain_id or not agent_id then invalid("agent_id", "agent_id and chain_id are required") end
  local h = host(ctx, chain_id)
  if h ~= "self" then
    if q.relayed then fail(508, "relay_loop", "a relayed inbox read reached a node that does not host " .. chain_id) end
    return 200, relay(h.url, "GET", "/v1/agent-comm/inbox", { query = { chain_id = chain_id, agent_id = agent_id,
      timestamp = q.timestamp, signature = q.signature, relayed = "1" } })
  end
  local entry = ctx.store:directory_get(chain_id, agent_id)
  if not entry then fail(404, "agent_not_registered", "agent " .. agent_id .. " is not registered on " .. chain_id) end
  local ts = tonumber(q.timestamp)
  local read = { kind = "inbox_read", agent_id = agent_id, chain_id = chain_id, timestamp = ts and math.tointeger(ts) }
  if not ts or math.abs(ts - ctx.now) > ac.CLOCK_SKEW or not ac.verify(read, q.signature, entry.public_key) then
    fail(403, "bad_signature", "reading an inbox needs the agent's signature over {kind=inbox_read, agent_id, "
      .. "chain_id, timestamp} made within 5 minutes", "signature")
  end
  local items = json.array()
  for i, r in ipairs(ctx.store:inbox(chain_id, agent_id, util.query_integer(q, "limit", 1, 500, 50))) do
    items[i] = message_view(r)
  end
  ctx.store:inbox_read(chain_id, agent_id, ctx.now)
  return 200, { agent_id = agent_id, chain_id = chain_id, node = peers.self_url(ctx.store), items = items }
end

return M
