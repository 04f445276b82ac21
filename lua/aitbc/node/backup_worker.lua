--- Makes a backup's snapshot, in a thread of its own (aitbc.node.backup):
-- every database file from one read transaction (a consistent state while
-- the node writes on), each file hashed as it is read back, a file marked
-- ready for download as soon as it is whole, then the manifest.
local backup = require "aitbc.node.backup"
local crypto = require "aitbc.crypto"
local db = require "aitbc.db"
local json = require "aitbc.json"
local log = require "aitbc.node.log"
local operations = require "aitbc.node.operations"
local sys = require "aitbc.sys"

local STEP_PAGES = 16384 -- pages per backup step (16 MiB of 1 KiB pages): progress about every 20 ms

--- SHA-256 and size of a file, read in 1 MiB blocks.
local function hash_file(path, on_bytes)
  local f = assert(io.open(path, "rb"))
  local h, size = crypto.sha256_stream(), 0
  while true do
    local chunk = f:read(1 << 20)
    if not chunk then break end
    h:update(chunk)
    size = size + #chunk
    if on_bytes then on_bytes(#chunk) end
  end
  f:close()
  return crypto.hex(h:final()), size
end

local function copy_file(from, to)
  local text = assert(sys.read_file(from))
  assert(sys.write_file(to, text, tonumber("600", 8)))
end

--- The chain's tables only, into a database of their own (one read
-- transaction of a connection of its own: the copy is one state).
local function copy_chain(db_path, path)
  os.remove(path)
  local src = assert(db.open(db_path))
  src:exec("PRAGMA busy_timeout = 10000")
  assert(src:exec("ATTACH DATABASE '" .. path:gsub("'", "''") .. "' AS b"))
  local ok, err = pcall(function()
    assert(src:exec("BEGIN"))
    local tables = assert(src:query([[SELECT name, sql FROM main.sqlite_schema WHERE type = 'table'
      AND name LIKE 'chain\_%' ESCAPE '\' ORDER BY name]]))
    for _, t in ipairs(tables) do
      assert(src:exec((t.sql:gsub("^CREATE TABLE ", "CREATE TABLE b.", 1))))
      assert(src:exec("INSERT INTO b." .. t.name .. " SELECT * FROM main." .. t.name))
    end
    local indexes = assert(src:query([[SELECT sql FROM main.sqlite_schema WHERE type = 'index' AND sql IS NOT NULL
      AND tbl_name LIKE 'chain\_%' ESCAPE '\']]))
    for _, i in ipairs(indexes) do
      assert(src:exec((i.sql:gsub("^CREATE (%a* ?)INDEX ", "CREATE %1INDEX b.", 1))))
    end
    local v = assert(src:first("PRAGMA main.user_version")).user_version
    assert(src:exec("PRAGMA b.user_version = " .. math.tointeger(v)))
    assert(src:exec("COMMIT"))
  end)
  if not ok then src:exec("ROLLBACK") end
  src:exec("DETACH DATABASE b")
  src:close()
  if not ok then error(err, 0) end
end

return function(arg_text)
  local a = json.decode(arg_text)
  local logger = log.open(a.log_path, a.log_level, "node")
  local dir = backup.dir(a.data_dir, a.op)
  local op = operations.read(a.data_dir, a.op)
  local done_bytes, last_save = 0, 0
  local function progress(n, phase, force)
    done_bytes = done_bytes + (n or 0)
    op.progress = { bytes_done = done_bytes, bytes_total = op.estimate_bytes, phase = phase }
    if force or sys.monotonic() - last_save > 0.2 then
      operations.save(a.data_dir, op)
      last_save = sys.monotonic()
    end
  end
  local src
  local ok, err = pcall(function()
    assert(sys.mkdir(dir, tonumber("700", 8)))
    src = assert(db.open(a.db_path, { readonly = true }))
    src:exec("PRAGMA busy_timeout = 10000")
    -- one read transaction for every database file: one consistent state
    assert(src:exec("BEGIN"))
    assert(src:first("SELECT count(*) AS n FROM sqlite_schema"))
    a.schema_version = assert(src:first("PRAGMA user_version")).user_version
    a.chain_heads = {}
    for _, c in ipairs(a.chains or {}) do
      local head = src:first("SELECT height, hash FROM chain_blocks WHERE chain_id = ? ORDER BY height DESC LIMIT 1", c)
      local supply = src:first("SELECT coalesce(sum(balance + staked), 0) AS s, count(*) AS n FROM chain_accounts "
        .. "WHERE chain_id = ?", c)
      -- balances in base units as a decimal string, as amounts travel (no float may round them)
      a.chain_heads[c] = head and { height = head.height, hash = head.hash, accounts = supply.n,
        balances = string.format("%d", supply.s) } or nil
    end
    operations.step(a.data_dir, op, string.format("snapshot of %s started: about %d bytes", a.type, op.estimate_bytes),
      { phase = "started" })
    local manifest_files = {}
    for i, f in ipairs(a.files) do
      local path = dir .. "/" .. f.name
      if f.kind == "db" then
        local b = assert(src.handle:backup_start(path))
        local state, remaining, pages
        local before, page_size = 0, assert(src:first("PRAGMA page_size")).page_size
        repeat
          state, remaining, pages = b:step(STEP_PAGES)
          if not state then error("backup step: " .. tostring(remaining), 0) end
          local copied = (pages - remaining) * page_size
          progress(copied - before, "copying " .. f.name)
          before = copied
          if state == "busy" then sys.sleep(0.005) end
        until state == "done"
        assert(b:finish())
      elseif f.kind == "chain" then
        copy_chain(a.db_path, path)
      elseif f.kind == "settings" then
        assert(sys.write_file(path, json.encode(a.settings, { pretty = true }) .. "\n", tonumber("600", 8)))
      else
        copy_file(f.source, path)
      end
      local sha, size = hash_file(path)
      op.files[i].ready, op.files[i].size, op.files[i].sha256 = true, size, sha
      manifest_files[#manifest_files + 1] = { name = f.name, size = size, sha256 = sha }
      progress(0, f.name .. " ready", true)
    end
    src:exec("COMMIT")
    src:close()
    src = nil
    local m = backup.manifest(a, manifest_files, sys.time())
    assert(sys.write_file(dir .. "/manifest.json", json.encode(m, { pretty = true }) .. "\n", tonumber("600", 8)))
    op.manifest = m
    op.progress = { bytes_done = m.total_bytes, bytes_total = m.total_bytes, phase = "ready" }
    operations.finish(a.data_dir, op, true, string.format("snapshot of %s ready: %d file(s), %d bytes", a.type,
      #manifest_files, m.total_bytes))
    logger:info("backup snapshot ready", { operation = a.op, bytes = m.total_bytes })
  end)
  if src then src:close() end
  backup.mark_finished()
  if not ok then
    logger:error("backup failed", { operation = a.op, error = tostring(err) })
    pcall(operations.finish, a.data_dir, op, false, "backup failed: " .. tostring(err))
    sys.remove_tree(dir)
  end
end
