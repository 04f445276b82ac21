--- The aitbc-api image, built FROM scratch by the engine (`make image`,
-- `aitbc deploy image`): this binary, every shared library it loads —
-- those it links and those it dlopens on first use (libcurl and its ~30
-- dependencies, libjq), read from /proc/self/maps once they are loaded, each
-- placed under its SONAME — the dynamic loader, CA certificates, and
-- `aitbc serve --listen 0.0.0.0:8000` as its entry point, with a health
-- check that is the binary itself (`aitbc api /health`).  The context is a
-- tar written here with fixed times and owners, so that the same binary
-- gives the same layers (the engine's cache).
local errors = require "aitbc.errors"
local sys = require "aitbc.sys"

local M = {}

M.DEFAULT_TAG = "aitbc-api:latest"
M.PORT = 8000
M.CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
--- The node's user in the image (nobody), owner of its data directory.
M.UID = 65534

-- ---- ELF: the interpreter of an executable and the SONAME of a library ----

local PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
local DT_STRTAB, DT_SONAME = 5, 14

--- {interp = path|nil, soname = name|nil} of a 64-bit little-endian ELF
-- file's bytes, or nil and why.
function M.elf_info(data)
  if data:sub(1, 4) ~= "\127ELF" then return nil, "not an ELF file" end
  if data:byte(5) ~= 2 or data:byte(6) ~= 1 then return nil, "not a 64-bit little-endian ELF file" end
  local phoff = string.unpack("<I8", data, 0x20 + 1)
  local phentsize, phnum = string.unpack("<I2I2", data, 0x36 + 1)
  local loads, dynamic, info = {}, nil, {}
  for i = 0, phnum - 1 do
    local at = phoff + i * phentsize + 1
    local ptype, _, offset, vaddr, _, filesz = string.unpack("<I4I4I8I8I8I8", data, at)
    if ptype == PT_LOAD then loads[#loads + 1] = { offset = offset, vaddr = vaddr, size = filesz }
    elseif ptype == PT_DYNAMIC then dynamic = { offset = offset, size = filesz }
    elseif ptype == PT_INTERP then info.interp = data:sub(offset + 1, offset + filesz):match("^[^%z]+") end
  end
  if dynamic then
    local strtab, soname
    for at = dynamic.offset + 1, dynamic.offset + dynamic.size - 15, 16 do
      local tag, value = string.unpack("<i8I8", data, at)
      if tag == 0 then break end
      if tag == DT_STRTAB then strtab = value elseif tag == DT_SONAME then soname = value end
    end
    if strtab and soname then
      for _, l in ipairs(loads) do -- the string table's address -> its place in the file
        if strtab >= l.vaddr and strtab < l.vaddr + l.size then
          local at = strtab - l.vaddr + l.offset + soname + 1
          info.soname = data:match("^[^%z]+", at)
        end
      end
    end
  end
  return info
end

--- The shared libraries this process has loaded, after loading those it
-- loads on first use: {path (real file), soname}, plus the loader's path
-- as the executable names it (PT_INTERP).
function M.libraries()
  require "aitbc.native.http" -- dlopens libcurl and its dependencies
  local jq_ok, jq_err = require("aitbc.native.jq").load()
  if not jq_ok then
    errors.raise("failure", "cannot load libjq to put it in the image: " .. tostring(jq_err),
      "install it (Debian: apt-get install libjq1, or 'make deps')")
  end
  local maps = assert(sys.read_file("/proc/self/maps"))
  local seen, libs = {}, {}
  for path in maps:gmatch("%s(/[^\n]+%.so[^\n/]*)\n") do
    if not seen[path] and not path:find(" (deleted)", 1, true) then
      seen[path] = true
      local data = sys.read_file(path)
      local info = data and M.elf_info(data)
      if info then
        libs[#libs + 1] = { path = path, soname = info.soname or path:match("[^/]+$"), size = #data }
      end
    end
  end
  table.sort(libs, function(a, b) return a.path < b.path end)
  local exe = assert(sys.exe_path())
  local info = assert(M.elf_info(assert(sys.read_file(exe))))
  return libs, info.interp, exe
end

-- ---- tar (ustar) ----

local function octal(n, width)
  return string.format("%0" .. (width - 1) .. "o", n) .. "\0"
end

--- One ustar header; names up to 100 bytes (ours are short).
local function header(name, size, mode, typeflag, uid)
  assert(#name <= 100, "tar name too long: " .. name)
  local fields = {
    name .. string.rep("\0", 100 - #name), octal(mode, 8), octal(uid or 0, 8), octal(uid or 0, 8),
    octal(size, 12), octal(0, 12), "        ", typeflag, string.rep("\0", 100),
    "ustar\0", "00", string.rep("\0", 32), string.rep("\0", 32), octal(0, 8), octal(0, 8), string.rep("\0", 155),
    string.rep("\0", 12),
  }
  local h = table.concat(fields)
  local sum = 0
  for i = 1, #h do sum = sum + h:byte(i) end
  return h:sub(1, 148) .. string.format("%06o\0 ", sum) .. h:sub(157)
end

--- A tar writer: :dir(name, mode, uid), :file(name, data, mode), :finish() -> bytes.
local function tar_writer()
  local parts, dirs = {}, {}
  local w = {}
  function w.dir(name, mode, uid)
    if dirs[name] then return end
    dirs[name] = true
    local parent = name:match("^(.*)/[^/]+$")
    if parent then w.dir(parent, 493) end
    parts[#parts + 1] = header(name .. "/", 0, mode or 493, "5", uid)
  end
  function w.file(name, data, mode)
    local parent = name:match("^(.*)/[^/]+$")
    if parent then w.dir(parent, 493) end
    parts[#parts + 1] = header(name, #data, mode or 420, "0")
    parts[#parts + 1] = data
    local pad = (512 - #data % 512) % 512
    if pad > 0 then parts[#parts + 1] = string.rep("\0", pad) end
  end
  function w.finish()
    parts[#parts + 1] = string.rep("\0", 1024)
    return table.concat(parts)
  end
  return w
end

M.tar_writer = tar_writer

-- ---- the context ----

function M.dockerfile()
  local check = '["/usr/bin/aitbc", "--timeout", "2", "--url", "http://127.0.0.1:' .. M.PORT .. '", "api", "/health"]'
  return table.concat({
    "# aitbc-api: the aitbc node, FROM scratch (written by aitbc deploy image)",
    "FROM scratch",
    "COPY rootfs/ /",
    string.format("COPY --chown=%d:%d data/ /data/", M.UID, M.UID),
    "ENV AITBC_HOME=/data HOME=/data",
    string.format("USER %d:%d", M.UID, M.UID),
    "WORKDIR /data",
    "EXPOSE " .. M.PORT,
    string.format('LABEL org.opencontainers.image.title="aitbc-api" org.opencontainers.image.version="%s"', sys.version),
    "STOPSIGNAL SIGTERM",
    "HEALTHCHECK --interval=2s --timeout=3s --start-period=2s --retries=3 CMD " .. check,
    string.format('ENTRYPOINT ["/usr/bin/aitbc", "serve", "--listen", "0.0.0.0:%d"]', M.PORT),
    "",
  }, "\n")
end

--- The build context: tar bytes and what went in {files, bytes, libraries}.
function M.context()
  local libs, interp, exe = M.libraries()
  local w = tar_writer()
  w.file("Dockerfile", M.dockerfile(), 420)
  local binary = assert(sys.read_file(exe))
  w.file("rootfs/usr/bin/aitbc", binary, 493)
  local bytes, names = #binary, {}
  for _, lib in ipairs(libs) do
    local dir = lib.path:match("^(.*)/[^/]+$")
    local data = assert(sys.read_file(lib.path))
    w.file("rootfs" .. dir .. "/" .. lib.soname, data, 493)
    bytes = bytes + #data
    names[#names + 1] = lib.soname
    -- the loader, where the executable looks for it (PT_INTERP)
    if interp and lib.soname == interp:match("[^/]+$") and interp ~= dir .. "/" .. lib.soname then
      w.file("rootfs" .. interp, data, 493)
      bytes = bytes + #data
    end
  end
  local certs = sys.read_file(M.CA_BUNDLE)
  if not certs then
    errors.raise("failure", "no CA certificates at " .. M.CA_BUNDLE,
      "install them (Debian: apt-get install ca-certificates, or 'make deps')")
  end
  w.file("rootfs" .. M.CA_BUNDLE, certs, 420)
  w.dir("rootfs/tmp", tonumber("1777", 8))
  w.dir("data", tonumber("700", 8), M.UID)
  bytes = bytes + #certs
  return w.finish(), { libraries = names, bytes = bytes, files = #libs + 2 }
end

--- Builds the image in the engine; on_line(text) gets the build's output.
-- Returns {tag, id, libraries, bytes, seconds}.
function M.build(eng, tag, on_line)
  local started = sys.monotonic()
  local tar, what = M.context()
  local id = eng:build(tar, tag or M.DEFAULT_TAG, on_line)
  return { tag = tag or M.DEFAULT_TAG, id = id, libraries = what.libraries, bytes = what.bytes,
    seconds = sys.monotonic() - started }
end

--- Whether ref names the image this module builds (so create may offer it).
function M.buildable(ref)
  return ref:match("^aitbc%-api:[%w][%w_.%-]*$") ~= nil or ref == "aitbc-api"
end

return M
