--- Peers (DESIGN.md §9): other nodes this node knows (`aitbc serve --peer
-- URL`, POST /v1/admin/peers).  Each hosts its own chains; this node
-- follows them (every block fetched and verified against the peer's node
-- key, as `serve --follow` does) while producing its own, and relays agent
-- messages to the peer that hosts the target chain.  The supervisor calls
-- M.tick; request handlers read what it wrote (peers, chain_follow).
local chain = require "aitbc.node.chain"
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local util = require "aitbc.node.util"

local M = { INTERVAL = 1, TIMEOUT = 3 }

--- A peer's URL in one spelling (no trailing slash) | nil, why.
function M.normalize(url)
  if type(url) ~= "string" then return nil, "must be a URL" end
  url = url:gsub("/+$", "")
  if not url:match("^https?://[%w%.%-%[%]:]+$") then
    return nil, "must be a node's base URL like http://127.0.0.1:8001 (scheme, host and port only)"
  end
  return url
end

local function api(url)
  return require("aitbc.api").new { url = url, timeout = M.TIMEOUT, retries = 0 }
end

--- At start-up: this node's own URL (what discovery tells others) and the peers given.
function M.start(store, self_url, urls, now)
  store:setting_set("self_url", self_url)
  for _, u in ipairs(urls or {}) do store:peer_add(assert(M.normalize(u)), now) end
end

function M.self_url(store) return store:setting_get("self_url") end

--- The peers' chains this node follows: {chain_id, leader, node_key, state}.
function M.followed(store) return store:peer_chains() end

--- Who hosts chain_id: "self", or the peer {url, node_key}, or nil.
function M.host_of(ctx, chain_id)
  for _, c in ipairs(ctx.config.chains) do if c == chain_id then return "self" end end
  local best
  for _, p in ipairs(ctx.store:peers_list()) do
    for _, c in ipairs(p.chains and json.decode(p.chains) or {}) do
      -- the peer that answers, else the one heard from last
      if c == chain_id and (not best or (p.state == "ok" and best.state ~= "ok")
        or (p.state == best.state and (p.last_seen or 0) > (best.last_seen or 0))) then
        best = p
      end
    end
  end
  return best and { url = best.url, node_key = best.node_key } or nil
end

--- The chains a peer hosts (not those it follows itself, nor ours).
local function hosted_by(info, own)
  local mine, out = {}, {}
  for _, c in ipairs(own) do mine[c] = true end
  for _, item in ipairs(info.items or {}) do
    if item.hosted ~= false and item.sync == nil and not mine[item.chain_id] then out[#out + 1] = item end
  end
  return out
end

local last_poll = {} -- url -> monotonic time of the last poll (this supervisor's)
local halted = {} -- chain -> true once a block was refused (until restart)

--- One peer: its chains, then their new blocks.
local function poll(store, p, node, logger, now)
  local client = api(p.url)
  local info, err = client:request("GET", "/v1/chains")
  if not info then
    if p.state ~= "unreachable" then logger:warn("peer does not answer", { peer = p.url, error = err.message }) end
    store:peer_update(p.url, { state = "unreachable", reason = err.message })
    for _, f in ipairs(store:peer_chains()) do
      if f.leader == p.url and f.state ~= "halted" then
        store:chain_follow_set(f.chain_id, "unreachable", nil, "the peer " .. p.url .. " does not answer", now)
      end
    end
    return
  end
  local key = info.this_node_key or info.authority
  if key == node.node_key.id then
    store:peer_update(p.url, { state = "self", reason = "this is this node's own URL", node_key = nil })
    return
  end
  local items = hosted_by(info, node.chains)
  local names = {}
  for i, item in ipairs(items) do names[i] = item.chain_id end
  store:peer_update(p.url, { node_key = key, chains = json.encode(json.array(names)), state = "ok", reason = nil,
    last_seen = now })
  for _, item in ipairs(items) do
    local c = item.chain_id
    local public = crypto.unbase64(item.authority or key or "", "urlsafe")
    if not halted[c] and public and #public == 32 then
      store:chain_follow_add(c, p.url, now)
      local ok, height, why = pcall(chain.pull_blocks, store, client, c, public)
      if not ok then
        store:chain_follow_set(c, "unreachable", nil, "the peer " .. p.url .. " does not answer: " .. tostring(height), now)
      elseif height then
        halted[c] = true
        store:chain_follow_set(c, "halted", height, why, now)
        logger:error("refused a block from a peer; stopped following " .. c, { chain = c, peer = p.url, height = height,
          reason = why })
      else
        local f = store:chain_follow_get(c)
        if f and f.state ~= "following" then store:chain_follow_set(c, "following", nil, nil, now) end
      end
    end
  end
end

--- The supervisor's turn: each peer polled every INTERVAL seconds, then the
-- agent messages waiting in the outbox.  node: {store, node_key, chains}.
function M.tick(node, logger, now, monotonic)
  local store = node.store
  for _, p in ipairs(store:peers_list()) do
    if (last_poll[p.url] or -math.huge) + M.INTERVAL <= monotonic then
      last_poll[p.url] = monotonic
      local ok, err = pcall(poll, store, p, node, logger, now)
      if not ok then logger:error("peer sync failed", { peer = p.url, error = tostring(err) }) end
    end
  end
  return require("aitbc.node.agentcomm").flush_outbox(node, logger, now)
end

-- ---- routes ----

local function view(p)
  return { url = p.url, node_key = p.node_key, chains = p.chains and json.decode(p.chains) or json.array(),
    state = p.state, reason = p.reason, last_seen = util.iso(p.last_seen), added_at = util.iso(p.added_at) }
end

--- GET /v1/peers: this node's URL and its peers with what they host.
function M.list(ctx)
  local items = json.array()
  for i, p in ipairs(ctx.store:peers_list()) do items[i] = view(p) end
  return 200, { self = M.self_url(ctx.store), node_key = ctx.node_key.id, chains = json.array(ctx.config.chains),
    items = items }
end

--- POST /v1/admin/peers {url}: follow that node's chains and relay to it.
function M.add(ctx)
  if ctx.config.follow then
    util.fail(409, "follower", "this node follows " .. ctx.config.follow .. " and takes no peers")
  end
  local body = ctx:body_object()
  local url, why = M.normalize(body.url)
  if not url then util.invalid("url", why) end
  local added = ctx.store:peer_add(url, ctx.now)
  return added and 201 or 200, { url = url, added = added }
end

--- DELETE /v1/admin/peers?url=URL
function M.remove(ctx)
  local url = M.normalize(ctx.query.url)
  if not url or not ctx.store:peer_remove(url) then
    util.fail(404, "peer_not_found", "no peer " .. tostring(ctx.query.url), "url")
  end
  return 200, { url = url, removed = true }
end

return M
