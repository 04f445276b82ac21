--- The fleet: the nodes this user works with, kept in AITBC_HOME/nodes.json
-- (mode 0600, written atomically):
--   {"version": 1, "nodes": [{"name", "host", "port", "type", "scheme", "added_at"}]}
-- Adding a node only stores it; nothing contacts it (aitbc.fleet.probe
-- does, for `node test` and `node chains`).  A node's API key is optional
-- and lives with the other keys, in the config file (mode 0600):
-- file.node_keys[name] = {key, source, imported_at}, shown masked.
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

M.TYPES = { "validator", "full", "archive", "coordinator" }
M.SCHEMES = { "http", "https" }
M.DEFAULT_PORT = 8000

local function usage(field, message, hint)
  errors.raise("usage", message, hint, { code = "invalid_value", field = field })
end

function M.path(home)
  return (home or require("aitbc.config").home()) .. "/nodes.json"
end

--- The registry {version, nodes}; a missing file is an empty one.
function M.read(home)
  local path = M.path(home)
  local text, why, errno = sys.read_file(path)
  if not text then
    if errno == 2 then return { version = 1, nodes = json.array() } end
    errors.raise("failure", "cannot read " .. path .. ": " .. tostring(why))
  end
  local doc = json.decode(text)
  if type(doc) ~= "table" or type(doc.nodes) ~= "table" then
    errors.raise("failure", path .. " is not a node registry ({\"version\": 1, \"nodes\": [...]})",
      "fix it by hand, or move it away to start afresh")
  end
  doc.nodes = json.array(doc.nodes)
  return doc
end

function M.write(doc, home)
  local path = M.path(home)
  local dir = path:match("^(.*)/[^/]+$")
  local ok, err = sys.mkdir(dir, tonumber("700", 8))
  if not ok then errors.raise("failure", "cannot create " .. dir .. ": " .. tostring(err)) end
  doc.version = 1
  ok, err = sys.write_file(path, json.encode(doc, { pretty = true }) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. tostring(err)) end
end

--- The node's base URL: scheme://host:port (an IPv6 address in brackets).
function M.url(node)
  local host = node.host:find(":", 1, true) and ("[" .. node.host .. "]") or node.host
  return string.format("%s://%s:%d", node.scheme or "http", host, node.port)
end

local function one_of(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end

--- A node from what `node add` was given; bad values name their field.
function M.validate(spec)
  local name = spec.name
  if type(name) ~= "string" or not name:match("^[%w][%w_.%-]*$") or #name > 64 then
    usage("name", "node name '" .. tostring(name) .. "' is not valid",
      "use letters, digits, '-', '_' and '.', starting with a letter or digit (e.g. us-east-1)")
  end
  local host = spec.host
  if type(host) == "string" then host = host:gsub("^%[(.*)%]$", "%1") end
  if type(host) ~= "string" or host == "" or #host > 253 or host:find("[%s/@?#]")
    or not (host:match("^[%w][%w.%-]*$") or host:match("^[%x:.]+$")) then
    usage("host", "--host '" .. tostring(spec.host) .. "' is not a host name or an IP address",
      "give the host alone, e.g. 10.0.0.5 or node1.example.org (the port goes in --port)")
  end
  local port = math.tointeger(tonumber(spec.port or M.DEFAULT_PORT))
  if not port or port < 1 or port > 65535 then usage("port", "--port must be a port number from 1 to 65535") end
  local ntype = spec.type or "full"
  if not one_of(M.TYPES, ntype) then usage("type", "--type must be one of " .. table.concat(M.TYPES, ", ")) end
  local scheme = spec.scheme or "http"
  if not one_of(M.SCHEMES, scheme) then usage("scheme", "--scheme must be http or https") end
  return { name = name, host = host, port = port, type = ntype, scheme = scheme,
    added_at = spec.added_at or os.date("!%Y-%m-%dT%H:%M:%SZ") }
end

--- "http://10.0.0.5:8080" (upstream's `node add ID URL`) -> host, port, scheme.
function M.parse_url(url)
  local scheme, rest = tostring(url):match("^(https?)://([^/]+)/?$")
  if not scheme then
    usage("url", "'" .. tostring(url) .. "' is not a node URL", "e.g. http://10.0.0.5:8080")
  end
  local host, port = rest:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = rest:match("^([^:]+):(%d+)$") end
  if not host then host = rest:match("^%[(.+)%]$") or rest end
  return host, port and tonumber(port) or (scheme == "https" and 443 or M.DEFAULT_PORT), scheme
end

--- The node named name, or nil and its index.
function M.find(doc, name)
  for i, n in ipairs(doc.nodes) do if n.name == name then return n, i end end
end

--- The node named name; raises not found (exit 3).
function M.get(name, home)
  local node = M.find(M.read(home), name)
  if not node then
    errors.raise("not_found", "node '" .. tostring(name) .. "' not found",
      "see 'aitbc node list', or add it with 'aitbc node add --name " .. tostring(name) .. " --host HOST --port PORT'",
      { code = "node_not_found" })
  end
  return node
end

--- Adds a node (stored only; nothing is contacted).  A name taken is a
-- failure unless replace.
function M.add(spec, home, replace)
  local node = M.validate(spec)
  local doc = M.read(home)
  local old, i = M.find(doc, node.name)
  if old and not replace then
    errors.raise("failure", "node '" .. node.name .. "' already exists (" .. M.url(old) .. ")",
      "remove it first ('aitbc node remove " .. node.name .. "') or choose another --name",
      { code = "node_exists", field = "name" })
  end
  if old then doc.nodes[i] = node else doc.nodes[#doc.nodes + 1] = node end
  M.write(doc, home)
  return node
end

--- Removes a node; returns it.  Unknown: not found (exit 3).
function M.remove(name, home)
  local doc = M.read(home)
  local node, i = M.find(doc, name)
  if not node then M.get(name, home) end
  table.remove(doc.nodes, i)
  M.write(doc, home)
  return node
end

--- Registers (or updates) a node a devnet runs: name, its URL, type.
function M.register(name, url, ntype, home)
  local host, port, scheme = M.parse_url(url)
  local doc = M.read(home)
  local old = M.find(doc, name)
  return M.add({ name = name, host = host, port = port, type = ntype, scheme = scheme,
    added_at = old and old.added_at or nil }, home, true)
end

-- ---- API keys, in the config file (file: the config's table) ----

function M.key(file, name)
  local keys = type(file.node_keys) == "table" and file.node_keys or {}
  local entry = keys[name]
  return type(entry) == "table" and type(entry.key) == "string" and entry.key or nil
end

--- Stores (or with key nil, drops) a node's key in the config table; the
-- caller writes the file.  A malformed key is a usage error.
function M.set_key(file, name, key, source)
  if key ~= nil then
    local ok, why, fix = require("aitbc.protocol.apikey").check(key)
    if not ok then usage("api_key", "--api-key " .. why, fix) end
  end
  file.node_keys = type(file.node_keys) == "table" and file.node_keys or {}
  file.node_keys[name] = key and { key = key, source = source, imported_at = os.date("!%Y-%m-%dT%H:%M:%SZ") } or nil
  if next(file.node_keys) == nil then file.node_keys = nil end
end

return M
