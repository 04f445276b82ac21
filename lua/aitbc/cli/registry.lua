--- Commands are modules `aitbc.commands.<name>`, each declaring itself once
-- (name, summary, options, arguments, examples, run).  A module is either a
-- single command or a group with `commands = {...}`.  `creates_config = true`
-- marks a command that writes the config file: a --config naming a file that
-- is not there yet is fine for it (and exit 3 for every other command).  Discovery lists the
-- module names without loading them; only what is needed gets loaded.
--
-- What the framework does for every command from fields of its declaration
-- (aitbc.cli.present, aitbc.cli.watch):
--   fields = {...}      the top-level fields of its JSON (of each item for a
--                       list): `--json` lists them, `--json F,G` picks them
--   id_field = "job_id" what -q/--quiet prints: the id it created (of each item for a list)
--   list = "items"      the key of its result that holds a list: --json picks
--                       fields of each item; adds --limit and --offset
--   paged = "/v1/jobs"  the node route (a path template) whose own limit and
--                       offset --limit/--offset go to; without it the list is
--                       paged here, after the command ran
--   watch = true        adds --watch [SECONDS]: run again until Ctrl-C
--   args[i].complete = "job" | "wallet" | ...  completion offers live ids
--                       (aitbc.commands.__complete)
local registry = {}

local PREFIX = "aitbc.commands."

local function source_dir_modules(dir)
  local sys = require "aitbc.native.sys"
  local names = {}
  for _, file in ipairs(sys.list_dir(dir .. "/aitbc/commands") or {}) do
    local name = file:match("^([%w_%-]+)%.lua$")
    if name then names[#names + 1] = name end
  end
  return names
end

--- Sorted names of every top-level command.
function registry.names()
  local names = {}
  local dir = os.getenv("AITBC_LUA_DIR")
  if dir and dir ~= "" then
    names = source_dir_modules(dir)
  else
    for mod in pairs(package.preload) do
      local name = mod:sub(1, #PREFIX) == PREFIX and mod:sub(#PREFIX + 1)
      if name and not name:find(".", 1, true) then names[#names + 1] = name end
    end
  end
  table.sort(names)
  for i, n in ipairs(names) do names[i] = n:gsub("(%w)_", "%1-") end
  return names
end

local cache = {}

--- The options the framework adds to a declaration that asks for them.
local function framework_options(decl)
  local have = {}
  for _, o in ipairs(decl.options) do have[o[1]] = true end
  local function add(o)
    if not have[o[1]] then decl.options[#decl.options + 1] = o end
  end
  if decl.list then
    add { "--limit", type = "integer", min = 1, metavar = "N", help = "at most N items" }
    add { "--offset", type = "integer", min = 0, default = 0, metavar = "N",
          help = "skip the first N items (the next page: --offset N+limit)" }
  end
  if decl.watch then
    add { "--watch", type = "number", min = 0.1, optional_value = true, metavar = "[SECONDS]",
          help = "show it again every SECONDS (default 2) until Ctrl-C" }
  end
end

local function normalise(decl, parent)
  decl.parent = parent
  decl.path = parent and (parent.path .. " " .. decl.name) or decl.name
  decl.options = decl.options or {}
  decl.args = decl.args or {}
  if not decl.commands then framework_options(decl) end
  for _, opt in ipairs(decl.options) do
    opt.long = opt[1]
    opt.key = opt.long:sub(3):gsub("-", "_")
    opt.type = opt.type or (opt.choices and "choice") or "string"
  end
  if decl.commands then
    decl.by_name = {}
    for _, sub in ipairs(decl.commands) do
      normalise(sub, decl)
      decl.by_name[sub.name] = sub
      for _, alias in ipairs(sub.aliases or {}) do decl.by_name[alias] = sub end
    end
  end
  return decl
end

--- The declaration of a top-level command, or nil if there is none.
function registry.get(name)
  if cache[name] then return cache[name] end
  if not name:match("^_*%w[%w%-]*$") then return nil end
  local ok, decl = pcall(require, PREFIX .. name:gsub("%-", "_"))
  if not ok then
    if tostring(decl):find("module '" .. PREFIX, 1, true) then return nil end
    error(decl, 0)
  end
  cache[name] = normalise(decl)
  return cache[name]
end

--- {name, summary, category} of every visible top-level command, in name
-- order, without loading one: the build's index (made from the
-- declarations by a first binary), or the declarations when running from
-- source (AITBC_LUA_DIR) or before the index exists.
function registry.summaries()
  local dir = os.getenv("AITBC_LUA_DIR")
  if (not dir or dir == "") and package.preload["aitbc.cli.command_index"] then
    return require("aitbc.cli.command_index")
  end
  local out = {}
  for _, d in ipairs(registry.all()) do out[#out + 1] = { name = d.name, summary = d.summary, category = d.category } end
  return out
end

--- Every declaration, in name order (help, completion, the reference).
function registry.all()
  local out = {}
  for _, name in ipairs(registry.names()) do
    local decl = registry.get(name)
    if decl and not decl.hidden then out[#out + 1] = decl end
  end
  return out
end

return registry
