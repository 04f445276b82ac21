--- Backups on the CLI's side: `admin backup` has the node make a snapshot
-- (aitbc.node.backup), downloads each file as soon as it is ready into
-- DEST.partial/ while hashing it, checks every file against the node's
-- manifest, writes the manifest, syncs, and only then renames the directory
-- to DEST: an interrupted backup is never where a good one would be.
-- `admin backup verify` checks a backup directory the same way (the
-- manifest's own checksum, every file's size and SHA-256), and `admin
-- restore` puts a verified backup back.
local crypto = require "aitbc.crypto"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local signing = require "aitbc.protocol.signing"
local sys = require "aitbc.sys"

local M = {}

M.FORMAT = "aitbc-backup"
M.STALL = 60 -- seconds without progress before the CLI gives up on the node

--- The manifest's checksum: SHA-256 of its canonical JSON without "checksum".
function M.manifest_checksum(m)
  local copy = {}
  for k, v in pairs(m) do if k ~= "checksum" then copy[k] = v end end
  return signing.hash(copy)
end

local function bytes(n) return require("aitbc.ops.present").bytes(n) end

--- Refuses a destination that exists or cannot be written, before the node
-- does any work; returns the path of its .partial directory.
function M.check_destination(dest)
  if dest == "" then errors.raise("usage", "--destination may not be empty") end
  dest = dest:gsub("/+$", "")
  if sys.stat(dest) then
    errors.raise("failure", "the destination " .. dest .. " exists; a backup never overwrites one",
      "choose a new path, e.g. " .. dest .. "-" .. os.date("%H%M%S"), { code = "destination_exists", field = "destination" })
  end
  local parent = dest:match("^(.*)/[^/]+$") or "."
  if parent == "" then parent = "/" end
  local ok, err = sys.mkdir(parent, tonumber("700", 8))
  local partial = dest .. ".partial"
  if ok then
    sys.remove_tree(partial) -- what an interrupted backup left
    ok, err = sys.mkdir(partial, tonumber("700", 8))
  end
  if ok then
    local probe = partial .. "/.write-test"
    ok, err = sys.write_file(probe, "", tonumber("600", 8))
    os.remove(probe)
  end
  if not ok then
    errors.raise("failure", "cannot write the destination " .. dest .. ": " .. tostring(err),
      "choose a directory you can write, e.g. --destination ~/backups/aitbc-" .. os.date("%Y%m%d"),
      { code = "destination_not_writable", field = "destination" })
  end
  return dest, partial
end

--- Downloads one file of the snapshot into dir, hashing it; returns its
-- size and SHA-256.  on_bytes(n) as bytes arrive.
local function download(client, id, name, dir, on_bytes)
  local http = require "aitbc.http"
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  local h, size = crypto.sha256_stream(), 0
  local url = client.url .. "/v1/admin/backups/" .. http.escape(id) .. "/files/" .. http.escape(name)
  local res, err = http.request { method = "GET", url = url, headers = { ["X-Api-Key"] = client.api_key }, timeout = 0,
    connect_timeout = 10, on_data = function(chunk)
      f:write(chunk)
      h:update(chunk)
      size = size + #chunk
      on_bytes(#chunk)
      return true
    end }
  f:close()
  sys.chmod(path, tonumber("600", 8)) -- keys and the database: the owner's alone
  if not res then error(err, 0) end
  if res.status ~= 200 then
    errors.raise(res.status == 404 and "not_found" or "failure", string.format("the node refused %s of backup %s: HTTP %d",
      name, id, res.status))
  end
  return size, crypto.hex(h:final())
end

--- Files and directories on disk, then the rename: DEST appears whole or not at all.
local function seal(partial, dest, names)
  for _, n in ipairs(names) do assert(sys.fsync(partial .. "/" .. n)) end
  assert(sys.fsync(partial))
  local ok, err = os.rename(partial, dest)
  if not ok then errors.raise("failure", "cannot rename " .. partial .. " to " .. dest .. ": " .. tostring(err)) end
  sys.fsync(dest:match("^(.*)/[^/]+$") or ".")
end

--- The whole backup.  opts: {type, destination}; say(text) tells people what
-- happens (the estimate first); progress(text) redraws the progress line.
-- Returns the summary {destination, type, files, total_bytes, checksum, ...}.
function M.create(client, opts, say, progress)
  local dest, partial = M.check_destination(opts.destination)
  local started = sys.monotonic()
  local ok, result = pcall(function()
    local op = client:call("POST", "/v1/admin/backups", { json = { type = opts.type },
      expect = { id = "string", estimate_bytes = "number", files = "array" } })
    say(string.format("backup %s of %s: estimated size %s (%d file(s)) -> %s", op.id, opts.type, bytes(op.estimate_bytes),
      #op.files, dest))
    local got, fetched, total = 0, {}, op.estimate_bytes
    local last_change, last_seen = sys.monotonic(), -1
    local function show()
      local node_done = op.progress and op.progress.bytes_done or 0
      local rate = got / math.max(sys.monotonic() - started, 0.001)
      progress(string.format("%s snapshot %s / %s, downloaded %s (%s/s)",
        M.bar((node_done + got) / math.max(2 * total, 1)), bytes(node_done), bytes(total), bytes(got), bytes(rate)))
    end
    while true do
      for _, f in ipairs(op.files) do
        if f.ready and not fetched[f.name] then
          local size, sha = download(client, op.id, f.name, partial, function(n)
            got = got + n
            if got - last_seen > (8 << 20) then last_seen = got show() end
          end)
          fetched[f.name] = { size = size, sha256 = sha }
          last_change = sys.monotonic()
        end
      end
      if op.state == "failed" then errors.raise("failure", "the node could not make the backup: " .. tostring(op.summary)) end
      if op.state == "succeeded" then break end
      show()
      sys.sleep(0.05)
      local prev = op.progress and op.progress.bytes_done
      op = client:call("GET", "/v1/admin/operations/" .. op.id, { expect = { state = "string", files = "array" } })
      if op.progress and op.progress.bytes_done ~= prev then last_change = sys.monotonic() end
      if sys.monotonic() - last_change > M.STALL then
        errors.raise("failure", "the node made no progress on backup " .. op.id .. " for " .. M.STALL .. " s")
      end
    end
    show()
    -- every file against the node's manifest (the node hashed its snapshot; this end what it wrote)
    local m = op.manifest
    if type(m) ~= "table" or M.manifest_checksum(m) ~= m.checksum then
      errors.raise("failure", "the node's manifest of backup " .. op.id .. " does not match its own checksum")
    end
    local names = {}
    for _, f in ipairs(m.files) do
      local have = fetched[f.name]
      if not have then errors.raise("failure", f.name .. " was not downloaded") end
      if have.size ~= f.size or have.sha256 ~= f.sha256 then
        errors.raise("failure", string.format("%s differs from the node's manifest (got %d bytes, sha256 %s; expected %d, "
          .. "%s)", f.name, have.size, have.sha256, f.size, f.sha256))
      end
      local st = sys.stat(partial .. "/" .. f.name)
      if not st or st.size ~= f.size then errors.raise("failure", f.name .. ": written size differs from the manifest") end
      names[#names + 1] = f.name
    end
    assert(sys.write_file(partial .. "/manifest.json", json.encode(m, { pretty = true }) .. "\n", tonumber("600", 8)))
    names[#names + 1] = "manifest.json"
    seal(partial, dest, names)
    local record = client:call("POST", "/v1/admin/backups/" .. op.id .. "/complete",
      { json = { verified = true, destination = dest } })
    local seconds = sys.monotonic() - started
    return { destination = dest, id = op.id, type = m.type, files = m.files, total_bytes = m.total_bytes,
      estimate_bytes = op.estimate_bytes, checksum = m.checksum, chains = m.chains, verified = true,
      seconds = seconds, bytes_per_second = m.total_bytes / math.max(seconds, 1e-6), recorded = record.finished_at }
  end)
  if not ok then
    sys.remove_tree(partial) -- nothing half-made stays behind
    error(result, 0)
  end
  return result
end

function M.bar(fraction)
  fraction = math.max(0, math.min(1, fraction))
  local n = math.floor(fraction * 20 + 0.5)
  return string.format("[%s%s] %3d%%", string.rep("#", n), string.rep(".", 20 - n), math.floor(fraction * 100))
end

-- ---- verify ----

--- One listed file of a backup against its manifest entry: the entry
-- with its status; problems found are added to problems.
local function check_file(dir, f, deep, problems)
  local path = dir .. "/" .. tostring(f.name)
  local fst = sys.stat(path)
  local entry = { name = f.name, size = f.size, sha256 = f.sha256 }
  if not fst then
    problems[#problems + 1] = f.name .. " is missing"
    entry.status = "missing"
  elseif fst.size ~= f.size then
    problems[#problems + 1] = string.format("%s has %d bytes, the manifest says %d", f.name, fst.size, f.size)
    entry.status = "wrong size"
  else
    local fh = assert(io.open(path, "rb"))
    local h = crypto.sha256_stream()
    while true do
      local chunk = fh:read(1 << 20)
      if not chunk then break end
      h:update(chunk)
    end
    fh:close()
    local sha = crypto.hex(h:final())
    if sha ~= f.sha256 then
      problems[#problems + 1] = f.name .. " was altered: its SHA-256 differs from the manifest"
      entry.status = "altered"
    else
      entry.status = "ok"
      if deep and f.name:match("%.db$") then
        local db = require "aitbc.db"
        local conn, err = db.open("file:" .. path .. "?immutable=1", { readonly = true })
        local row = conn and conn:first("PRAGMA quick_check")
        if conn then conn:close() end
        if not row or row.quick_check ~= "ok" then
          problems[#problems + 1] = f.name .. " fails SQLite's quick_check: " .. tostring(row and row.quick_check or err)
          entry.status = "corrupt"
        end
      end
    end
  end
  return entry
end

--- Checks a backup directory: {ok, problems, manifest, files}.  deep: the
-- database files also pass SQLite's quick_check.
function M.verify(dir, deep)
  dir = dir:gsub("/+$", "")
  local problems, checked = {}, json.array()
  local st = sys.stat(dir)
  if not st or st.type ~= "directory" then
    return { ok = false, problems = { dir .. " is not a directory" }, directory = dir }
  end
  local text = sys.read_file(dir .. "/manifest.json")
  local m = text and json.decode(text)
  if not text then
    problems[1] = "no manifest.json: not a complete backup" .. (dir:match("%.partial$") and " (an interrupted one)" or "")
    return { ok = false, problems = problems, directory = dir }
  end
  if type(m) ~= "table" or m.format ~= M.FORMAT or type(m.files) ~= "table" then
    return { ok = false, problems = { "manifest.json is not an aitbc backup manifest" }, directory = dir }
  end
  if M.manifest_checksum(m) ~= m.checksum then problems[#problems + 1] = "manifest.json was altered (its checksum differs)" end
  local listed = { ["manifest.json"] = true }
  for _, f in ipairs(m.files) do
    listed[f.name] = true
    checked[#checked + 1] = check_file(dir, f, deep, problems)
  end
  for _, name in ipairs(sys.list_dir(dir) or {}) do
    if not listed[name] then problems[#problems + 1] = name .. " is not in the manifest" end
  end
  return { ok = #problems == 0, problems = problems, directory = dir, manifest = m, files = checked, deep = deep or false }
end

return M
