--- Backups on the node's side: a snapshot of what the type asks for is made
-- in DATA_DIR/backups/ID/ by a thread (aitbc.node.backup_worker) while the
-- node serves — the database through SQLite's backup API inside one read
-- transaction, so the copy is one consistent state — each file hashed
-- (SHA-256) into a manifest; the CLI downloads the files as each is ready,
-- checks them against the manifest, and says when it has them (the node
-- then records the backup and removes the snapshot).  A snapshot nobody
-- took within an hour is removed.
local json = require "aitbc.json"
local operations = require "aitbc.node.operations"
local signing = require "aitbc.protocol.signing"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = {}

M.TYPES = { full = true, chain = true, db = true, config = true }
M.TTL = 3600 -- seconds a snapshot waits for its download
M.FORMAT = "aitbc-backup"
M.threads = {} -- this worker state's backup threads

--- What each type holds: {name, kind ("db", "chain", "file"), source}.
function M.plan(data_dir, kind)
  local files = {}
  local function add(name, what, source)
    if what ~= "file" or sys.stat(source) then files[#files + 1] = { name = name, kind = what, source = source } end
  end
  if kind == "full" or kind == "db" then add("node.db", "db", data_dir .. "/node.db") end
  if kind == "chain" then add("chain.db", "chain", data_dir .. "/node.db") end
  if kind == "full" or kind == "config" then
    add("settings.json", "settings") -- what the node runs with (its options), written by the worker
    add("node.json", "file", data_dir .. "/node.json")
    add("release.json", "file", data_dir .. "/release.json")
  end
  if kind == "full" then
    add("node.key", "file", data_dir .. "/node.key")
    add("admin.key", "file", data_dir .. "/admin.key")
  end
  return files
end

function M.dir(data_dir, id) return data_dir .. "/backups/" .. id end

-- One backup at a time: two watermarks count those started and finished.
local STARTED, FINISHED = "aitbc.node.backups:started", "aitbc.node.backups:finished"
function M.running() return sys.queue_committed(STARTED) > sys.queue_committed(FINISHED) end
function M.mark_started() sys.queue_commit(STARTED, sys.queue_committed(STARTED) + 1) end
function M.mark_finished() sys.queue_commit(FINISHED, sys.queue_committed(STARTED)) end

--- The estimated size of each file: the database's used pages ((page_count
-- - freelist) x page_size), the others' sizes.
local function estimate(store, files)
  local total = 0
  for _, f in ipairs(files) do
    if f.kind == "db" then
      local s = store:db_stats()
      f.estimate = (s.page_count - s.freelist_count) * s.page_size
    elseif f.kind == "chain" then
      f.estimate = store:chain_bytes()
    elseif f.kind == "settings" then
      f.estimate = 1024
    else
      f.estimate = (sys.stat(f.source) or { size = 0 }).size
    end
    total = total + f.estimate
  end
  return total
end
M.estimate = estimate

--- The node's settings as it runs (no secrets: those are in the key files).
function M.settings(config)
  return { chains = config.chains, block_time = config.block_time, follow = config.follow,
    authority = config.authority, faucet_chains = config.faucet_chains, heartbeat_timeout = config.heartbeat_timeout,
    log_level = config.log_level, environment = config.environment, thresholds = config.thresholds,
    alerts = config.alerts, release = config.release }
end

--- The canonical checksum of a manifest (over everything but itself).
function M.manifest_checksum(m)
  local copy = {}
  for k, v in pairs(m) do if k ~= "checksum" then copy[k] = v end end
  return signing.hash(copy)
end

-- ---- the admin API ----

function M.create(ctx)
  local body = ctx:body_object(true)
  local kind = util.optional_string(body, "type", 16) or "full"
  if not M.TYPES[kind] then invalid("type", "must be full, chain, db or config") end
  if M.running() then
    fail(409, "backup_running", "a backup of this node is being made; wait for it (aitbc admin operations)")
  end
  local files = M.plan(ctx.config.data_dir, kind)
  local total = estimate(ctx.store, files)
  local disk = sys.disk_usage(ctx.config.data_dir)
  if disk and disk.available < total * 1.1 + (16 << 20) then
    fail(507, "insufficient_storage", string.format("the node needs about %d MB free beside its data directory for the "
      .. "snapshot, and has %d MB", math.ceil(total * 1.1 / (1 << 20)) + 16, disk.available // (1 << 20)))
  end
  local public = {}
  for i, f in ipairs(files) do public[i] = { name = f.name, estimate_bytes = f.estimate, ready = false } end
  local op = operations.create(ctx.config.data_dir, "backup", { type = kind, by = ctx.key.key_id, pid = sys.getpid() },
    ctx.now)
  op.estimate_bytes, op.files, op.progress = total, json.array(public), { bytes_done = 0, bytes_total = total }
  operations.save(ctx.config.data_dir, op)
  for i = #M.threads, 1, -1 do -- those of earlier backups (ended: none runs)
    M.threads[i]:join()
    M.threads[i] = nil
  end
  M.mark_started()
  local thread, err = sys.thread("aitbc.node.backup_worker", json.encode { data_dir = ctx.config.data_dir,
    db_path = ctx.config.db_path, op = op.id, type = kind, files = files, log_path = ctx.config.log_path,
    chains = ctx.config.chains, version = sys.version, node_key = ctx.node_key.id, log_level = ctx.config.log_level,
    settings = M.settings(ctx.config) })
  if not thread then
    M.mark_finished()
    operations.finish(ctx.config.data_dir, op, false, "cannot start the backup: " .. tostring(err))
    fail(500, "backup_failed", "cannot start the backup: " .. tostring(err))
  end
  M.threads[#M.threads + 1] = thread -- joined later: joining here would hold this worker until it ends
  ctx.log:info("backup started", { operation = op.id, type = kind, estimate_bytes = total })
  return 202, op
end

local function backup_op(ctx, id)
  local op = operations.read(ctx.config.data_dir, id)
  if not op or op.kind ~= "backup" then fail(404, "backup_not_found", "no backup " .. id) end
  return op
end

M.CHUNK = 1 << 20

--- GET /v1/admin/backups/{id}/files/{name}: a file of the snapshot, once it is ready.
function M.file(ctx, id, name)
  local op = backup_op(ctx, id)
  local entry
  for _, f in ipairs(op.files or {}) do if f.name == name then entry = f end end
  if not entry then fail(404, "file_not_found", "backup " .. id .. " has no file " .. name) end
  if not entry.ready then fail(409, "not_ready", name .. " is not copied yet; its backup is " .. op.state) end
  local path = M.dir(ctx.config.data_dir, id) .. "/" .. name
  local f = io.open(path, "rb")
  if not f then fail(410, "gone", "the snapshot of backup " .. id .. " is gone (taken, or expired after an hour)") end
  ctx.reply_headers = { ["X-Backup-Size"] = tostring(entry.size) }
  return 200, { stream = function()
    local chunk = f:read(M.CHUNK)
    if not chunk then f:close() end
    return chunk
  end }
end

--- POST /v1/admin/backups/{id}/complete {verified, destination}: the CLI has
-- the files and checked them; the node records it and drops the snapshot.
function M.complete(ctx, id)
  local body = ctx:body_object(true)
  local op = backup_op(ctx, id)
  if op.state ~= "succeeded" then fail(409, "not_ready", "backup " .. id .. " is " .. op.state) end
  if body.verified ~= true then invalid("verified", "must be true: the files were checked against the manifest") end
  local record = { id = id, type = op.params.type, finished_at = util.iso(ctx.now), finished_epoch = ctx.now,
    bytes = op.manifest and op.manifest.total_bytes, destination = util.optional_string(body, "destination", 1024),
    manifest_checksum = op.manifest and op.manifest.checksum }
  sys.write_file(ctx.config.data_dir .. "/last-backup.json", json.encode(record) .. "\n", tonumber("600", 8))
  sys.remove_tree(M.dir(ctx.config.data_dir, id))
  op.taken = record
  operations.save(ctx.config.data_dir, op)
  ctx.log:info("backup taken", { operation = id, destination = record.destination, bytes = record.bytes })
  return 200, record
end

function M.abort(ctx, id)
  backup_op(ctx, id)
  sys.remove_tree(M.dir(ctx.config.data_dir, id))
  return 204
end

--- Snapshots past their hour, or whose backup failed or was taken, are
-- removed (the main loop, now and then).
function M.prune(data_dir, now)
  for _, id in ipairs(sys.list_dir(data_dir .. "/backups") or {}) do
    local op = operations.read(data_dir, id)
    local stale = not op or op.state == "failed" or op.taken or (now - (op.started or 0)) > M.TTL
    if op and op.state == "running" and op.params and op.params.pid and not sys.kill(op.params.pid, 0) then
      -- its process is gone (killed): the snapshot is partial
      pcall(operations.finish, data_dir, op, false, "the node process making it stopped; the snapshot was partial")
      stale = true
    end
    if stale then sys.remove_tree(data_dir .. "/backups/" .. id) end
  end
end

--- A manifest as the worker writes it (also what `admin backup verify` reads).
function M.manifest(a, files, now)
  local m = { format = M.FORMAT, version = 1, id = a.op, type = a.type, created_at = util.iso(now),
    node = { version = a.version, node_key = a.node_key }, schema_version = a.schema_version, chains = a.chain_heads,
    files = json.array(files), total_bytes = 0 }
  for _, f in ipairs(files) do m.total_bytes = m.total_bytes + f.size end
  m.checksum = M.manifest_checksum(m)
  return m
end

return M
