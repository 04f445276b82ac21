--- Operations an admin starts and watches: restarts of a service or of the
-- whole node, updates, restores.  Each is a record in DATA_DIR/operations/
-- (JSON, written whole), so that whichever process carries it on — a
-- worker accepting it, the node's main loop draining a service, the
-- supervisor swapping processes — adds its steps where the others and the
-- CLI read them, across the restart itself.
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local M = {}

M.KEEP = 200 -- records kept; older ones are removed

function M.dir(data_dir) return data_dir .. "/operations" end

local function path(data_dir, id) return M.dir(data_dir) .. "/" .. id .. ".json" end

--- A new record, written: {id, kind, params, state = "requested", steps}.
function M.create(data_dir, kind, params, now)
  assert(sys.mkdir(M.dir(data_dir), tonumber("700", 8)))
  local op = { id = "op_" .. crypto.hex(crypto.random(8)), kind = kind, params = params, state = "requested",
    created_at = util.iso(now), started = now, steps = json.array() }
  M.save(data_dir, op)
  M.prune(data_dir)
  return op
end

function M.save(data_dir, op)
  op.updated_at = util.iso(sys.time())
  local ok, err = sys.write_file(path(data_dir, op.id), json.encode(op) .. "\n", tonumber("600", 8))
  if not ok then error("cannot write the operation record: " .. tostring(err), 0) end
end

--- The record, or nil when there is none (or it is not one).
function M.read(data_dir, id)
  if type(id) ~= "string" or not id:match("^op_%x+$") then return nil end
  local text = sys.read_file(path(data_dir, id))
  local op = text and json.decode(text)
  return type(op) == "table" and op or nil
end

--- The newest records first (at most limit).
function M.list(data_dir, limit)
  local names = sys.list_dir(M.dir(data_dir)) or {}
  local ops = {}
  for _, name in ipairs(names) do
    local op = M.read(data_dir, name:match("^(op_%x+)%.json$"))
    if op then ops[#ops + 1] = op end
  end
  table.sort(ops, function(a, b) return (a.started or 0) > (b.started or 0) end)
  local out = json.array()
  for i = 1, math.min(limit or #ops, #ops) do out[i] = ops[i] end
  return out
end

function M.prune(data_dir)
  local ops = M.list(data_dir)
  for i = M.KEEP + 1, #ops do os.remove(path(data_dir, ops[i].id)) end
end

--- Adds a step {time, text, ok, ...fields} and saves the record.
function M.step(data_dir, op, text, fields)
  local s = { time = util.iso(sys.time()), at = sys.time() - op.started, text = text }
  for k, v in pairs(fields or {}) do s[k] = v end
  op.steps[#op.steps + 1] = s
  if op.state == "requested" then op.state = "running" end
  M.save(data_dir, op)
end

--- Ends it: state "succeeded" or "failed", with its outcome.
function M.finish(data_dir, op, ok, summary, fields)
  op.state = ok and "succeeded" or "failed"
  op.summary = summary
  op.seconds = sys.time() - op.started
  op.finished_at = util.iso(sys.time())
  for k, v in pairs(fields or {}) do op[k] = v end
  M.save(data_dir, op)
end

--- Restarts the records measured: {seconds} of whole-node restarts that
-- succeeded, newest first (for the update plan's downtime estimate).
function M.measured_restarts(data_dir, limit)
  local out = {}
  for _, op in ipairs(M.list(data_dir)) do
    if (op.kind == "restart" or op.kind == "update") and op.state == "succeeded" and op.params
      and op.params.service == "all" and op.handover_seconds then
      out[#out + 1] = op.handover_seconds
      if #out >= (limit or 20) then break end
    end
  end
  return out
end

-- ---- the queue from request handlers to the node's main loop ----

function M.queue(config) return "aitbc.node.control:" .. config.db_path end

--- Hands an operation to the main loop (which runs it, or passes it on to
-- the supervisor).
function M.submit(config, op)
  sys.queue_push(M.queue(config), op.id)
end

return M
