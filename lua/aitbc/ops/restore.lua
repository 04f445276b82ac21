--- `admin restore`: a verified backup back into a node's data directory
-- (the node stopped: its DATA_DIR/node.lock free).  A database already
-- there is moved aside (--force), never overwritten.  After it, the
-- restored database is opened and its chains' heads and balances compared
-- with those the manifest recorded.
local backup = require "aitbc.ops.backup"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

local function copy(from, to)
  local src = assert(io.open(from, "rb"))
  local tmp = to .. ".restoring"
  local dst, err = io.open(tmp, "wb")
  if not dst then
    src:close()
    errors.raise("failure", "cannot write " .. to .. ": " .. tostring(err))
  end
  while true do
    local chunk = src:read(1 << 20)
    if not chunk then break end
    dst:write(chunk)
  end
  src:close()
  dst:close()
  sys.chmod(tmp, tonumber("600", 8))
  assert(sys.fsync(tmp))
  assert(os.rename(tmp, to))
end

--- Moves DATA_DIR/name (and a database's -wal and -shm) aside; returns the new name.
local function move_aside(dir, name, stamp)
  local moved = name .. ".before-restore-" .. stamp
  assert(os.rename(dir .. "/" .. name, dir .. "/" .. moved))
  for _, ext in ipairs { "-wal", "-shm" } do
    if sys.stat(dir .. "/" .. name .. ext) then os.rename(dir .. "/" .. name .. ext, dir .. "/" .. moved .. ext) end
  end
  return moved
end

--- The chain's tables of the backup replace those of the database.
local function import_chain(db_path, chain_db)
  local store = assert(require("aitbc.node.store").open(db_path)) -- creates it (with its schema) when new
  local conn = store.db
  assert(conn:exec("ATTACH DATABASE '" .. chain_db:gsub("'", "''") .. "' AS b"))
  local ok, err = pcall(function()
    conn:transaction(function()
      local tables = assert(conn:query([[SELECT name FROM b.sqlite_schema WHERE type = 'table'
        AND name LIKE 'chain\_%' ESCAPE '\']]))
      for _, t in ipairs(tables) do
        assert(conn:exec("DELETE FROM main." .. t.name))
        assert(conn:exec("INSERT INTO main." .. t.name .. " SELECT * FROM b." .. t.name))
      end
      return true
    end)
  end)
  conn:exec("DETACH DATABASE b")
  store:close()
  if not ok then errors.raise("failure", "cannot import the chain: " .. tostring(err)) end
end

--- What the restored database holds of each chain the manifest recorded.
local function compare_chains(db_path, recorded)
  local db = require "aitbc.db"
  local conn = assert(db.open(db_path, { readonly = true }))
  local out = json.array()
  for chain_id, want in pairs(recorded or {}) do
    local head = conn:first("SELECT height, hash FROM chain_blocks WHERE chain_id = ? ORDER BY height DESC LIMIT 1",
      chain_id)
    local sums = conn:first("SELECT coalesce(sum(balance + staked), 0) AS s, count(*) AS n FROM chain_accounts "
      .. "WHERE chain_id = ?", chain_id)
    local balances = string.format("%d", sums.s)
    local same = head and head.height == want.height and head.hash == want.hash and balances == want.balances
      and sums.n == want.accounts
    out[#out + 1] = { chain_id = chain_id, height = head and head.height, hash = head and head.hash,
      accounts = sums.n, balances = balances, matches_manifest = same or false }
  end
  conn:close()
  table.sort(out, function(a, b) return a.chain_id < b.chain_id end)
  return out
end

--- Restores the backup in `from` into data_dir.  opts.force moves what is
-- there aside.  Returns what it did.
function M.offline(from, data_dir, opts)
  local v = backup.verify(from, false)
  if not v.ok then
    errors.raise("failure", "the backup in " .. from .. " does not verify: " .. table.concat(v.problems, "; "),
      "restore another backup; nothing was changed", { code = "backup_invalid" })
  end
  local m = v.manifest
  local serve = require "aitbc.node.serve"
  serve.private_data_dir(data_dir)
  local lock, why = sys.lock_file(data_dir .. "/node.lock")
  if not lock then
    errors.raise("failure", "a node runs on " .. data_dir .. " (" .. tostring(why) .. "); stop it before restoring into it",
      nil, { code = "node_running" })
  end
  local stamp, moved, restored = os.date("%Y%m%d-%H%M%S"), json.array(), json.array()
  local function place(name, target)
    target = target or name
    if sys.stat(data_dir .. "/" .. target) then
      if not opts.force then
        lock:unlock()
        errors.raise("failure", data_dir .. "/" .. target .. " exists; restoring would replace it",
          "add --force to move it aside (" .. target .. ".before-restore-" .. stamp .. ")", { code = "target_exists" })
      end
      moved[#moved + 1] = move_aside(data_dir, target, stamp)
    end
    copy(from .. "/" .. name, data_dir .. "/" .. target)
    restored[#restored + 1] = target
  end
  -- every refusal before the first change
  if not opts.force then
    for _, f in ipairs(m.files) do
      if f.name ~= "chain.db" and sys.stat(data_dir .. "/" .. f.name) then
        lock:unlock()
        errors.raise("failure", data_dir .. "/" .. f.name .. " exists; restoring would replace it",
          "add --force to move what is there aside (NAME.before-restore-" .. stamp .. ")", { code = "target_exists" })
      end
    end
  end
  for _, f in ipairs(m.files) do
    if f.name == "chain.db" then
      import_chain(data_dir .. "/node.db", from .. "/chain.db")
      restored[#restored + 1] = "chain tables of node.db"
    else
      place(f.name)
    end
  end
  local chains = sys.stat(data_dir .. "/node.db") and compare_chains(data_dir .. "/node.db", m.chains) or json.array()
  lock:unlock()
  return { from = from, data_dir = data_dir, type = m.type, backup_id = m.id, created_at = m.created_at,
    restored = restored, moved_aside = moved, chains = chains }
end

return M
