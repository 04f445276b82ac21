--- Settings: flag > environment variable > config file > default.
-- The file is JSON at $AITBC_HOME/config.json (~/.aitbc/config.json);
-- --config or AITBC_CONFIG names another.  Every known key is declared in
-- `config.keys`; `config set` refuses others.
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local config = {}

local function check_url(v)
  if not v:match("^https?://[^/%s]+") then
    return nil, "must be an http:// or https:// URL, e.g. http://127.0.0.1:8000"
  end
  return (v:gsub("/+$", ""))
end

--- Ollama's address as OLLAMA_HOST spells it ("host:port", ":port",
-- "http://host:port", a bare host) -> its URL | nil, reason.
function config.ollama_url(v)
  v = tostring(v)
  if v:match("%s") or v == "" then return nil, "must be Ollama's address, e.g. http://127.0.0.1:11434 or 127.0.0.1:11434" end
  if v:sub(1, 1) == ":" then v = "127.0.0.1" .. v end
  if not v:match("^%a[%w+.-]*://") then v = "http://" .. v end
  if not v:match("^https?://[^/]+") then return nil, "must be an http:// or https:// address, e.g. http://127.0.0.1:11434" end
  if not v:match("://[^/]+:%d+") and not v:match("^https://") then v = v:gsub("/*$", "") .. ":11434" end
  return (v:gsub("/+$", ""))
end

local function check_timeout(v)
  local n = tonumber(v)
  if not n or n <= 0 or n > 86400 then return nil, "must be a number of seconds between 0 and 86400" end
  return n
end

local function check_choice(choices)
  return function(v)
    for _, c in ipairs(choices) do if v == c then return v end end
    return nil, "must be one of " .. table.concat(choices, ", ")
  end
end

local function check_name(v)
  if not v:match("^[%w_%-%.]+$") then return nil, "may use letters, digits, '-', '_' and '.' only" end
  return v
end

--- name -> {default, env, help, check, secret}
config.keys = {
  url = { default = "http://127.0.0.1:8000", env = "AITBC_URL", check = check_url,
          help = "URL of the AITBC node the CLI talks to" },
  api_key = { env = "AITBC_API_KEY", secret = true, help = "API key sent as X-Api-Key" },
  output = { default = "table", env = "AITBC_OUTPUT", check = check_choice { "table", "json", "yaml" },
             help = "output format: table, json or yaml" },
  timeout = { default = 30, env = "AITBC_TIMEOUT", check = check_timeout,
              help = "seconds to wait for the node before giving up" },
  environment = { default = "default", env = "AITBC_ENVIRONMENT", check = check_name,
                  help = "active environment name (development, staging, production, ...)" },
  chain = { default = "ait-devnet", env = "AITBC_CHAIN", check = check_name,
            help = "chain the wallet and chain commands use" },
  ollama_url = { default = "http://127.0.0.1:11434", env = "OLLAMA_HOST", check = config.ollama_url,
                 help = "Ollama's URL, for the miner and ollama commands (OLLAMA_HOST as Ollama reads it: host:port or a URL)" },
  color = { default = "auto", env = "AITBC_COLOR", check = check_choice { "auto", "always", "never" },
            help = "colour in tables: auto (terminal only), always or never" },
}

function config.key_names()
  local names = {}
  for k in pairs(config.keys) do names[#names + 1] = k end
  table.sort(names)
  return names
end

function config.home()
  local home = sys.getenv("AITBC_HOME")
  if home and home ~= "" then return home end
  return (sys.getenv("HOME") or ".") .. "/.aitbc"
end

function config.expand(path)
  if path:sub(1, 2) == "~/" then return (sys.getenv("HOME") or "") .. path:sub(2) end
  return path
end

--- The config file's path, and whether the user named it (--config or AITBC_CONFIG).
function config.file_path(flags)
  local p = flags and flags.config or sys.getenv("AITBC_CONFIG")
  if p and p ~= "" then return config.expand(p), true end
  return config.home() .. "/config.json", false
end

local ENOENT, EPERM, EACCES, ENOTDIR, EISDIR = 2, 1, 13, 20, 21

--- Why a file cannot be read, as an error whose kind gives the exit code:
-- missing 3, a directory 2, no permission 4, anything else 1.
local function unreadable(what, path, reason, errno)
  if errno == ENOENT or errno == ENOTDIR then
    return errors.new("not_found", what .. " not found: " .. path, "check the path", { code = "file_not_found" })
  elseif errno == EISDIR then
    return errors.new("usage", what .. " " .. path .. " is a directory, not a file", nil, { code = "is_directory" })
  elseif errno == EACCES or errno == EPERM then
    return errors.new("auth", what .. " " .. path .. " cannot be read: permission denied",
      "check its owner and mode (ls -l " .. path .. ")", { code = "permission_denied" })
  end
  return errors.new("failure", what .. " " .. path .. " cannot be read: " .. tostring(reason), nil, { code = "read_failed" })
end

--- The text of a file the user named (what: "--file", "script", ...); ~/
-- is expanded.  Raises an error saying why it cannot be read.
function config.read_input(path, what)
  local text, reason, errno = sys.read_file(config.expand(path))
  if not text then error(unreadable(what, path, reason, errno), 0) end
  return text
end

--- The file's table | nil, err.  A missing file is {} unless must_exist
-- (a file the user named with --config or AITBC_CONFIG).
function config.read_file(path, must_exist)
  local text, reason, errno = sys.read_file(path)
  if not text then
    if (errno == ENOENT or errno == ENOTDIR) and not must_exist then return {} end
    return nil, unreadable("config file", path, reason, errno)
  end
  if text:match("^%s*$") then return {} end
  local data, err = json.decode(text)
  if type(data) ~= "table" or (next(data) ~= nil and json.is_array(data)) then
    return nil, errors.new("failure", "config file " .. path .. " is not valid: " .. (err or "expected a JSON object"),
      "fix it by hand, or move it away to start afresh")
  end
  return data
end

function config.write_file(path, data)
  local dir = path:match("^(.*)/[^/]+$")
  if dir and dir ~= "" then
    local ok, err = sys.mkdir(dir, tonumber("700", 8))
    if not ok then return nil, errors.new("failure", "cannot create " .. dir .. ": " .. err) end
  end
  local ok, err = sys.write_file(path, json.encode(data, { pretty = true }) .. "\n", tonumber("600", 8))
  if not ok then return nil, errors.new("failure", "cannot write " .. path .. ": " .. err) end
  return true
end

--- Validates one value for key; returns the normalised value | nil, reason.
function config.check(key, value)
  local spec = config.keys[key]
  if value == nil or not spec.check then return value end
  return spec.check(tostring(value))
end

--- Resolves every key.  flags: parsed global options (underscored names).
-- Returns {values = {}, sources = {}, path = file}; raises a usage error for
-- an invalid value, naming where it came from.  A config file the user
-- named must exist (exit 3), unless creates_file: the command writes it.
function config.resolve(flags, creates_file)
  flags = flags or {}
  local path, named = config.file_path(flags)
  local file, err = config.read_file(path, named and not creates_file)
  if not file then
    if err.kind == "not_found" then
      err.hint = "check the path; commands that store settings create it (aitbc --config " .. path .. " config set ...)"
    end
    error(err, 0)
  end
  local values, sources = {}, {}
  for key, spec in pairs(config.keys) do
    local value, source
    if flags[key] ~= nil then
      value, source = flags[key], "flag --" .. key:gsub("_", "-")
    elseif spec.env and (sys.getenv(spec.env) or "") ~= "" then
      value, source = sys.getenv(spec.env), "env " .. spec.env
    elseif file[key] ~= nil then
      value, source = file[key], "file"
    else
      value, source = spec.default, "default"
    end
    if value ~= nil then
      local ok, why = config.check(key, value)
      if ok == nil then
        errors.raise("usage", string.format("%s (from %s) %s", key, source, why),
          source == "file" and ("edit " .. path .. " or run 'aitbc config unset " .. key .. "'") or nil)
      end
      value = ok
    end
    values[key], sources[key] = value, source
  end
  return { values = values, sources = sources, path = path, file = file }
end

--- A secret shown safely: first and last four characters at most.
function config.mask(value)
  if type(value) ~= "string" then return value end
  if #value < 12 then return string.rep("*", #value > 0 and 8 or 0) end
  return value:sub(1, 4) .. "…" .. value:sub(-4)
end

return config
