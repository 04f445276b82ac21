--- The operating system: the native `sys` module plus /proc readings.
local native = require "aitbc.native.sys"

local sys = setmetatable({}, { __index = native })

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end
--- read_file(path) -> text | nil, reason, errno: the system's reason
-- ("No such file or directory", "Is a directory", ...) without the path.
sys.read_file = function(path)
  local f, err, code = io.open(path, "rb")
  if not f then
    if err:sub(1, #path + 2) == path .. ": " then err = err:sub(#path + 3) end
    return nil, err, code
  end
  local text, rerr, rcode = f:read("a") -- a directory opens, and fails here
  f:close()
  if not text then return nil, rerr or "cannot read", rcode end
  return text
end

--- Aggregate CPU times in jiffies {user, nice, system, idle, iowait, ..., total}.
function sys.cpu_times()
  local line = (read("/proc/stat") or ""):match("^cpu%s+([^\n]+)")
  if not line then return nil, "/proc/stat is not readable" end
  local names = { "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal" }
  local t, i = { total = 0 }, 0
  for n in line:gmatch("%d+") do
    i = i + 1
    if names[i] then t[names[i]] = tonumber(n) t.total = t.total + tonumber(n) end
  end
  return t
end

--- CPU busy fraction between two cpu_times() readings (0..1).
function sys.cpu_busy(a, b)
  local total = b.total - a.total
  if total <= 0 then return 0 end
  return 1 - ((b.idle + b.iowait) - (a.idle + a.iowait)) / total
end

--- Memory in bytes {total, available, used}.
function sys.memory()
  local text = read("/proc/meminfo")
  if not text then return nil, "/proc/meminfo is not readable" end
  local kb = function(key) return tonumber(text:match(key .. ":%s+(%d+)")) or 0 end
  local total, avail = kb("MemTotal") * 1024, kb("MemAvailable") * 1024
  return { total = total, available = avail, used = total - avail }
end

--- Network bytes per interface {name = {rx, tx}} (loopback included).
function sys.network()
  local text = read("/proc/net/dev")
  if not text then return nil, "/proc/net/dev is not readable" end
  local out = {}
  for name, rest in text:gmatch("\n%s*([^:%s]+):([^\n]*)") do
    local f = {}
    for n in rest:gmatch("%d+") do f[#f + 1] = tonumber(n) end
    out[name] = { rx = f[1] or 0, tx = f[9] or 0 }
  end
  return out
end

--- Load averages {1, 5, 15} and uptime in seconds.
function sys.loadavg()
  local a, b, c = (read("/proc/loadavg") or ""):match("^(%S+)%s+(%S+)%s+(%S+)")
  if not a then return nil, "/proc/loadavg is not readable" end
  return { tonumber(a), tonumber(b), tonumber(c) }
end

function sys.uptime()
  return tonumber((read("/proc/uptime") or ""):match("^(%S+)"))
end

--- Resident memory of this process in bytes (peak and current).
function sys.rss()
  local text = read("/proc/self/status") or ""
  return (tonumber(text:match("VmRSS:%s+(%d+)")) or 0) * 1024, (tonumber(text:match("VmHWM:%s+(%d+)")) or 0) * 1024
end

--- A new private directory under $TMPDIR (mode 0700).
function sys.tempdir(prefix)
  local base = native.getenv("TMPDIR") or "/tmp"
  local crypto = require "aitbc.native.crypto"
  for _ = 1, 10 do
    local path = string.format("%s/%s-%s", base, prefix or "aitbc", crypto.hex(crypto.random(6)))
    if not native.stat(path) then
      local ok, err = native.mkdir(path, tonumber("700", 8))
      if ok then return path end
      return nil, err
    end
  end
  return nil, "could not create a temporary directory in " .. base
end

--- Removes a file or a directory tree (like rm -rf); refuses "/" and "".
-- A symbolic link is removed, never followed (unlink comes first: it
-- succeeds on links, dangling ones included, and on files).
function sys.remove_tree(path)
  assert(type(path) == "string" and path ~= "" and path ~= "/", "refusing to remove " .. tostring(path))
  if os.remove(path) then return true end
  local st = native.stat(path)
  if not st then return true end
  if st.type == "directory" then
    for _, name in ipairs(native.list_dir(path) or {}) do sys.remove_tree(path .. "/" .. name) end
  end
  return os.remove(path)
end

--- Shell-quotes one word for /bin/sh.
function sys.shell_quote(s)
  if s:match("^[%w%._/%-=:,@+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

return sys
