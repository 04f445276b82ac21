--- Asking the fleet's nodes how they are: latency (several probes of
-- /health, min/p50/p95/max), version, the chains each hosts and their
-- heads, and how each node's chains compare with the other nodes'.
--
-- Sync status of a node's chain, against the chain's reference node — the
-- one that seals it (this_node_key = authority) if it is registered, else
-- the one with the highest head:
--   synced       same height, same hash
--   behind N     N blocks lower, and its head is the reference's block at
--                that height (one more request, to the reference)
--   diverged     same height and another hash, a head that is not on the
--                reference's chain, or another authority for that chain id
--   not hosted   the node answers but does not keep that chain
--   unreachable  the node does not answer in time
-- All nodes are asked at once (http.request_many), with a short timeout.
local api = require "aitbc.api"
local fleet = require "aitbc.fleet"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

M.DEFAULT_TIMEOUT = 2

local function request(node, path, key, timeout)
  return { method = "GET", url = fleet.url(node) .. path, timeout = timeout, connect_timeout = timeout,
    headers = key and { ["X-Api-Key"] = key } or nil }
end

local function why(res)
  if res.error then
    local e = require("aitbc.errors").from_http(res.error, res.kind)
    return e.code == "connect" and "connection refused" or e.code == "timeout" and "no answer in time"
      or e.code == "resolve" and "host name not found" or res.error
  end
  return "HTTP " .. res.status .. " from /v1/chains"
end

--- Reads a /v1/chains answer: {authority, this_node_key, follows, chains = {id = {height, hash, sync}}, order}.
local function chains_view(res)
  if res.error or res.status ~= 200 then return nil, why(res) end
  local doc = json.decode(res.body or "")
  if type(doc) ~= "table" or type(doc.items) ~= "table" then return nil, "/v1/chains did not answer a chain list" end
  local view = { authority = doc.authority, this_node_key = doc.this_node_key, follows = doc.follows, chains = {},
    order = {} }
  for _, c in ipairs(doc.items) do
    if type(c) == "table" and type(c.chain_id) == "string" then
      view.chains[c.chain_id] = { height = math.tointeger(c.height), hash = c.head_hash,
        sync = type(c.sync) == "table" and c.sync.state or nil }
      view.order[#view.order + 1] = c.chain_id
    end
  end
  return view
end

--- Every node's chains, asked at once: list of {node, url, view | error, seconds}.
function M.survey(nodes, keys, timeout)
  timeout = timeout or M.DEFAULT_TIMEOUT
  local reqs = {}
  for i, n in ipairs(nodes) do reqs[i] = request(n, "/v1/chains", keys and keys[n.name], timeout) end
  local results = #reqs > 0 and http.request_many(reqs) or {}
  local out = {}
  for i, n in ipairs(nodes) do
    local view, err = chains_view(results[i])
    out[i] = { node = n, url = fleet.url(n), view = view, error = err }
  end
  return out
end

local function is_leader(v) return v.authority ~= nil and v.authority == v.this_node_key end

--- The reference of chain c: the registered node sealing it (highest head
-- if several claim it), else the node with the highest head; ties go to
-- the first in the registry.
local function reference(survey, c)
  local best, best_leader
  for _, s in ipairs(survey) do
    local chain = s.view and s.view.chains[c]
    if chain and chain.height then
      local leader = is_leader(s.view)
      if not best or (leader and not best_leader)
        or (leader == best_leader and chain.height > best.view.chains[c].height) then
        best, best_leader = s, leader
      end
    end
  end
  return best
end

--- The cell of node s on chain c against the reference; when the two
-- heads are at different heights, also the check that settles it: the
-- block at the lower height, asked of the higher one.
local function cell_for(s, c, ref, rc)
  local mine = s.view and s.view.chains[c]
  if not s.view then return { status = "unreachable" } end
  if not mine then return { status = "not hosted" } end
  if not mine.height then
    return { status = "behind", behind = rc and rc.height and (rc.height + 1) or nil, height = json.null,
      note = "no block yet" }
  end
  if s == ref then return { status = "synced", height = mine.height, hash = mine.hash, reference = true } end
  if s.view.authority ~= ref.view.authority then
    return { status = "diverged", height = mine.height, hash = mine.hash, note = "another authority" }
  end
  if mine.height == rc.height then
    return { status = mine.hash == rc.hash and "synced" or "diverged", height = mine.height, hash = mine.hash }
  end
  local cell = { height = mine.height, hash = mine.hash }
  local check = { cell = cell, from = ref.node, chain = c, height = mine.height, expect = mine.hash,
    behind = rc.height - mine.height }
  if mine.height > rc.height then check.from, check.height, check.expect = s.node, rc.height, rc.hash end
  return cell, check
end

--- Settles the cells whose heads are at different heights: on the same
-- chain (the higher one has the lower one's head) it is behind — or, ahead
-- of the reference's answer (it sealed meanwhile), synced; else diverged.
local function settle(checks, keys, timeout)
  local reqs = {}
  for i, k in ipairs(checks) do
    reqs[i] = request(k.from, api.path("/v1/chain/{chain}/blocks/{height}", { chain = k.chain, height = k.height }),
      keys and keys[k.from.name], timeout or M.DEFAULT_TIMEOUT)
  end
  local results = #reqs > 0 and http.request_many(reqs) or {}
  for i, k in ipairs(checks) do
    local res = results[i]
    local block = not res.error and res.status == 200 and json.decode(res.body or "") or nil
    if type(block) == "table" and block.hash == k.expect then
      k.cell.status = k.behind > 0 and "behind" or "synced"
      k.cell.behind = k.behind > 0 and k.behind or nil
    elseif type(block) == "table" or (not res.error and res.status == 404) then
      k.cell.status = "diverged"
    else
      k.cell.status, k.cell.note = "unknown", "the reference did not answer for block " .. k.height
    end
  end
end

--- The sync status of every node on every chain: {chains = [ids],
-- references = {id = name}, cells = {name = {id = cell}}} where a cell is
-- {status, behind, height, hash, reference, note}.
function M.compare(survey, keys, timeout)
  local chains, seen = json.array(), {}
  for _, s in ipairs(survey) do
    for _, c in ipairs(s.view and s.view.order or {}) do
      if not seen[c] then seen[c], chains[#chains + 1] = true, c end
    end
  end
  local cells, refs, checks = {}, {}, {}
  for _, s in ipairs(survey) do cells[s.node.name] = {} end
  for _, c in ipairs(chains) do
    local ref = reference(survey, c)
    refs[c] = ref and ref.node.name or nil
    for _, s in ipairs(survey) do
      local cell, check = cell_for(s, c, ref, ref and ref.view.chains[c])
      local mine = s.view and s.view.chains[c]
      if mine and mine.sync and mine.sync ~= "following" then cell.follow_state = mine.sync end
      cells[s.node.name][c] = cell
      checks[#checks + 1] = check
    end
  end
  settle(checks, keys, timeout)
  return { chains = chains, references = refs, cells = cells }
end

--- A cell as the table shows it.
function M.cell_text(cell)
  if not cell then return "-" end
  if cell.status == "behind" then return cell.behind and ("behind " .. cell.behind) or "behind" end
  return cell.status
end

--- The nodes × chains matrix of the registry's nodes.
function M.matrix(nodes, keys, timeout)
  local t0 = sys.monotonic()
  local survey = M.survey(nodes, keys, timeout)
  local cmp = M.compare(survey, keys, timeout)
  local rows = json.array()
  for _, s in ipairs(survey) do
    rows[#rows + 1] = { name = s.node.name, url = s.url, type = s.node.type, reachable = s.view ~= nil,
      error = s.error, chains = cmp.cells[s.node.name] }
  end
  local chains = json.array()
  for _, c in ipairs(cmp.chains) do
    local ref = cmp.references[c]
    local rc
    for _, s in ipairs(survey) do if s.node.name == ref then rc = s.view.chains[c] end end
    chains[#chains + 1] = { chain_id = c, reference = ref, height = rc and rc.height, hash = rc and rc.hash }
  end
  return { nodes = rows, chains = chains, seconds = sys.monotonic() - t0 }
end

local function percentile(sorted, p)
  if #sorted == 0 then return nil end
  local rank = math.max(1, math.ceil(p / 100 * #sorted))
  return sorted[rank]
end

local function ms(x) return x and math.floor(x * 1e6 + 0.5) / 1e3 end

--- An answer to /health from an aitbc node: {status, version, ...} (200 when
-- healthy, 503 when degraded).  Anything else answering there is not one.
local function health_document(res)
  local doc = (res.status == 200 or res.status == 503) and (res.json or json.decode(res.body or "")) or nil
  return type(doc) == "table" and type(doc.status) == "string" and doc or nil
end

--- Probes of /health, each timed end to end: samples (seconds), failures,
-- the last failure, the last health document, the last other answer's
-- status.  A node that does not answer the first probe gets no more: one
-- timeout says it, --probes of them only make the wait longer.
local function probe(node, key, count, timeout)
  local samples, failures, last_error, health, other = {}, 0, nil, nil, nil
  for _ = 1, count do
    local t0 = sys.monotonic()
    local res, err = http.request(request(node, "/health", key, timeout))
    local dt = sys.monotonic() - t0
    if res then
      samples[#samples + 1] = dt
      local doc = health_document(res)
      if doc then health = doc else other = res.status end
    else
      if err.kind == "interrupted" then error(err, 0) end
      failures, last_error = failures + 1, err
      if #samples == 0 then break end
    end
  end
  return samples, failures, last_error, health, other
end

local function latency(samples)
  local sorted = { table.unpack(samples) }
  table.sort(sorted)
  local each = json.array()
  for i, s in ipairs(samples) do each[i] = ms(s) end
  return { min = ms(sorted[1]), p50 = ms(percentile(sorted, 50)), p95 = ms(percentile(sorted, 95)),
    max = ms(sorted[#sorted]), samples = each }
end

--- The node's chains, each with its sync status against the other nodes.
local function chains_compared(node, others, keys, timeout)
  local all = { node }
  for _, o in ipairs(others) do if o.name ~= node.name then all[#all + 1] = o end end
  local survey = M.survey(all, keys, timeout)
  local cmp = M.compare(survey, keys, timeout)
  local list = json.array()
  for _, c in ipairs(survey[1].view and survey[1].view.order or {}) do
    local cell = cmp.cells[node.name][c]
    list[#list + 1] = { chain_id = c, height = cell.height, hash = cell.hash, sync = cell.status,
      behind = cell.behind, reference = cmp.references[c], note = cell.note or cell.follow_state }
  end
  return list, #all - 1
end

--- node test: probes of /health (the first opens the connection, the
-- others reuse it), /v1/node, /v1/chains compared with the other
-- registered nodes, and the stored key's role.  Returns the report, or nil
-- and why: {unreachable = the last transport error, failures, sent} when
-- no probe got an answer, {not_a_node = the HTTP status} when what answers
-- gave no aitbc health document.
function M.test(node, others, keys, opts)
  opts = opts or {}
  local timeout, count = opts.timeout or M.DEFAULT_TIMEOUT, opts.probes or 5
  local key = keys and keys[node.name]
  local samples, failures, last_error, health, other = probe(node, key, count, timeout)
  if #samples == 0 then return nil, { unreachable = last_error, failures = failures, sent = failures } end
  if not health then return nil, { not_a_node = other, sent = #samples + failures } end
  local report = { name = node.name, url = fleet.url(node), type = node.type, reachable = true, probes = count,
    failed_probes = failures, latency_ms = latency(samples), status = health.status or "unknown",
    uptime_seconds = health.uptime_seconds }
  local info = http.request(request(node, "/v1/node", key, timeout))
  local doc = info and info.status == 200 and json.decode(info.body or "")
  if type(doc) == "table" then
    report.version, report.node_key, report.started_at = doc.version, doc.node_key, doc.started_at
  end
  report.version = report.version or health.version
  report.chains, report.compared_with = chains_compared(node, others, keys, timeout)
  if key then
    local who = http.request(request(node, "/v1/auth/whoami", key, timeout))
    local w = who and json.decode(who.body or "")
    report.api_key = { key_id = require("aitbc.protocol.apikey").identity(key),
      accepted = who ~= nil and who.status == 200, role = type(w) == "table" and w.role or nil,
      status = who and who.status or nil }
  end
  return report
end

return M
