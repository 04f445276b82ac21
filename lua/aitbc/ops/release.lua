--- The release channel: a directory (or a URL serving one) with the
-- binaries and channel.json, a manifest signed with Ed25519 by the release
-- key that nodes pin in their configuration (DATA_DIR/node.json "release":
-- {"channel", "public_key"}).  `aitbc release build` writes them; a node's
-- update reads and verifies them.  As TUF teaches: the manifest expires, its
-- sequence only grows (a node refuses an older manifest than one it has
-- seen: a freeze or rollback attack), and a node never goes below the
-- newest version it trusted unless told to.
local crypto = require "aitbc.crypto"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local signing = require "aitbc.protocol.signing"
local sys = require "aitbc.sys"

local M = {}

M.FORMAT = "aitbc-release-channel"
M.MANIFEST = "channel.json"
M.PLATFORM = "linux-x86_64"

--- "1.10.2" > "1.9.0": numeric parts compared in turn; a suffix ("-rc1") sorts
-- before the plain version.  Returns -1, 0 or 1.
function M.compare(a, b)
  local function parts(v)
    local nums, suffix = {}, tostring(v):match("^[%d%.]+(.*)$") or ""
    for n in tostring(v):gmatch("%d+") do nums[#nums + 1] = tonumber(n) end
    return nums, suffix
  end
  local pa, sa = parts(a)
  local pb, sb = parts(b)
  for i = 1, math.max(#pa, #pb) do
    local x, y = pa[i] or 0, pb[i] or 0
    if x ~= y then return x < y and -1 or 1 end
  end
  if sa == sb then return 0 end
  if sa == "" then return 1 end
  if sb == "" then return -1 end
  return sa < sb and -1 or 1
end

function M.valid_version(v)
  return type(v) == "string" and v:match("^%d+%.%d+%.%d+[%w%.%-]*$") ~= nil and #v <= 64
end

-- ---- keys ----

--- A release key file: the Ed25519 seed in hex (as node.key holds the node's).
function M.read_key(path)
  local text, err = sys.read_file(path)
  if not text then
    errors.raise("not_found", "cannot read the release key " .. path .. ": " .. tostring(err),
      "make one: aitbc release keygen --out " .. path)
  end
  local seed = crypto.unhex(text:match("^%s*(%x+)%s*$") or "")
  if not seed or #seed ~= 32 then errors.raise("failure", path .. " is not a release key (64 hex digits)") end
  local public, secret = crypto.sign_keypair(seed)
  return { public = public, secret = secret, id = crypto.base64(public, "urlsafe") }
end

function M.keygen(path)
  if sys.stat(path) then errors.raise("failure", path .. " exists; a release key is never overwritten") end
  local seed = crypto.random(32)
  local ok, err = sys.write_file(path, crypto.hex(seed) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. tostring(err)) end
  return M.read_key(path)
end

-- ---- the signed manifest ----

function M.sign(signed, key)
  return { signed = signed, signatures = json.array { { key_id = key.id,
    sig = crypto.base64(crypto.sign(signing.canonical(signed), key.secret), "urlsafe") } } }
end

--- Verifies a channel document against the pinned public key (base64url):
-- the signed part | nil, why.  now: refuse an expired one.
function M.verify(doc, public_key_id, now)
  if type(doc) ~= "table" or type(doc.signed) ~= "table" then return nil, "it is not a signed release manifest" end
  local public = crypto.unbase64(public_key_id or "", "urlsafe")
  if not public or #public ~= 32 then return nil, "the pinned release key is not an Ed25519 key (base64url)" end
  local s = doc.signed
  if s.format ~= M.FORMAT then return nil, "it is not an aitbc release channel (format " .. tostring(s.format) .. ")" end
  local good = false
  for _, sig in ipairs(type(doc.signatures) == "table" and doc.signatures or {}) do
    local raw = type(sig) == "table" and type(sig.sig) == "string" and crypto.unbase64(sig.sig, "urlsafe")
    if raw and sig.key_id == public_key_id and crypto.verify(raw, signing.canonical(s), public) then good = true end
  end
  if not good then
    return nil, (type(doc.signatures) ~= "table" or #doc.signatures == 0) and "the manifest is not signed"
      or "the manifest's signature does not verify with the pinned release key (tampered, or signed by another key)"
  end
  if type(s.expires_at) ~= "number" or (now and s.expires_at < now) then
    return nil, "the manifest expired at " .. os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(tonumber(s.expires_at) or 0))
  end
  if type(s.releases) ~= "table" then return nil, "the manifest lists no releases" end
  return s
end

--- The release for "latest" (the highest version) or one version | nil, why.
function M.pick(signed, version)
  local best
  for _, r in ipairs(signed.releases) do
    if version == "latest" then
      if not best or M.compare(r.version, best.version) > 0 then best = r end
    elseif r.version == version then
      best = r
    end
  end
  if best then return best end
  local have = {}
  for _, r in ipairs(signed.releases) do have[#have + 1] = r.version end
  table.sort(have, function(x, y) return M.compare(x, y) < 0 end)
  return nil, "the channel has no version " .. version .. " (it has: " .. (#have > 0 and table.concat(have, ", ")
    or "none") .. ")"
end

-- ---- reading a channel: a directory, file:// or http(s):// ----

local function is_url(channel) return channel:match("^https?://") ~= nil end
local function local_dir(channel) return (channel:gsub("^file://", "")) end

--- The channel's manifest document | nil, why.
function M.fetch_manifest(channel)
  if is_url(channel) then
    local res, err = require("aitbc.http").request { method = "GET", url = channel:gsub("/+$", "") .. "/" .. M.MANIFEST,
      timeout = 30 }
    if not res then return nil, "cannot reach the channel: " .. tostring(err and err.message) end
    if res.status ~= 200 then return nil, "the channel answered HTTP " .. res.status .. " for " .. M.MANIFEST end
    local doc = json.decode(res.body or "")
    if type(doc) ~= "table" then return nil, M.MANIFEST .. " is not JSON" end
    return doc
  end
  local text, err = sys.read_file(local_dir(channel) .. "/" .. M.MANIFEST)
  if not text then return nil, "cannot read " .. local_dir(channel) .. "/" .. M.MANIFEST .. ": " .. tostring(err) end
  local doc = json.decode(text)
  if type(doc) ~= "table" then return nil, M.MANIFEST .. " is not JSON" end
  return doc
end

--- Copies a release's binary into `path`, checking its size and SHA-256;
-- returns true | nil, why (nothing is left at path then).
function M.fetch_binary(channel, release, path)
  local partial = path .. ".partial"
  os.remove(partial)
  local h, size = crypto.sha256_stream(), 0
  local f = assert(io.open(partial, "wb"))
  local ok, why = true, nil
  if is_url(channel) then
    local res, err = require("aitbc.http").request { method = "GET", timeout = 300,
      url = channel:gsub("/+$", "") .. "/" .. release.file, on_data = function(chunk)
        f:write(chunk) h:update(chunk) size = size + #chunk return size <= release.size end }
    if not res then ok, why = false, "download failed: " .. tostring(err and err.message)
    elseif res.status ~= 200 then ok, why = false, "the channel answered HTTP " .. res.status .. " for " .. release.file end
  else
    local src = io.open(local_dir(channel) .. "/" .. release.file, "rb")
    if not src then
      ok, why = false, "the channel has no file " .. tostring(release.file)
    else
      while true do
        local chunk = src:read(1 << 20)
        if not chunk then break end
        f:write(chunk) h:update(chunk) size = size + #chunk
      end
      src:close()
    end
  end
  f:close()
  if ok and size ~= release.size then ok, why = false, string.format("the binary has %d bytes, the manifest says %d", size,
    release.size) end
  if ok and crypto.hex(h:final()) ~= release.sha256 then
    ok, why = false, "the binary's SHA-256 differs from the signed manifest (tampered)"
  end
  if not ok then
    os.remove(partial)
    return nil, why
  end
  sys.chmod(partial, tonumber("755", 8))
  sys.fsync(partial)
  assert(os.rename(partial, path))
  return true
end

-- ---- building a release ----

--- What a binary says about itself: {version, schema_version}.
local function inspect(binary)
  local proc = assert(sys.spawn { argv = { binary, "-o", "json", "version" }, stdin = "null", stdout = "pipe",
    stderr = "pipe" })
  local code, out, err = proc:communicate(nil, 30)
  local doc = code == 0 and json.decode(out)
  if type(doc) ~= "table" or not doc.version then
    errors.raise("failure", binary .. " is not an aitbc binary that runs here (" .. tostring(err or out) .. ")")
  end
  return doc
end

--- Builds (or adds to) the channel in out: the binary copied as
-- aitbc-VERSION, the manifest re-signed.  opts: version, key (path),
-- out (dir), binary (default this one), channel name, notes, expires_days.
function M.build(opts)
  if not M.valid_version(opts.version) then
    errors.raise("usage", "--version must look like 1.2.3 (optionally with a suffix: 1.2.3-rc1), got '"
      .. tostring(opts.version) .. "'")
  end
  local key = M.read_key(opts.key)
  local binary = opts.binary or assert(sys.exe_path())
  local info = inspect(binary)
  if info.version ~= opts.version then
    errors.raise("failure", string.format("%s says it is version %s, not %s", binary, info.version, opts.version),
      "build it with that version: make VERSION=" .. opts.version)
  end
  assert(sys.mkdir(opts.out, tonumber("755", 8)))
  local now = os.time()
  local signed = { format = M.FORMAT, version = 1, channel = opts.channel or "stable", sequence = 0,
    releases = json.array() }
  local existing = sys.read_file(opts.out .. "/" .. M.MANIFEST)
  if existing then
    local doc = json.decode(existing)
    local s, why = M.verify(doc, key.id, nil)
    if not s then
      errors.raise("failure", opts.out .. "/" .. M.MANIFEST .. " exists and is not this key's: " .. why,
        "use an empty --out directory, or the key that signed it")
    end
    signed = s
  end
  local file = "aitbc-" .. opts.version
  local text = assert(sys.read_file(binary))
  local ok, err = sys.write_file(opts.out .. "/" .. file, text, tonumber("755", 8))
  if not ok then errors.raise("failure", "cannot write " .. opts.out .. "/" .. file .. ": " .. tostring(err)) end
  local entry = { version = opts.version, component = "node", platform = M.PLATFORM, file = file, size = #text,
    sha256 = crypto.hex(crypto.sha256(text)), schema_version = info.schema_version, config_format = 1, created_at = now,
    notes = opts.notes }
  local releases = json.array()
  for _, r in ipairs(signed.releases) do if r.version ~= opts.version then releases[#releases + 1] = r end end
  releases[#releases + 1] = entry
  table.sort(releases, function(a, b) return M.compare(a.version, b.version) < 0 end)
  signed.releases, signed.sequence, signed.updated_at = releases, (signed.sequence or 0) + 1, now
  signed.expires_at = now + math.floor((opts.expires_days or 90) * 86400)
  local doc = M.sign(signed, key)
  ok, err = sys.write_file(opts.out .. "/" .. M.MANIFEST, json.encode(doc, { pretty = true }) .. "\n",
    tonumber("644", 8))
  if not ok then errors.raise("failure", "cannot write the manifest: " .. tostring(err)) end
  return { out = opts.out, release = entry, sequence = signed.sequence, expires_at = signed.expires_at,
    public_key = key.id, releases = #releases }
end

return M
