--- What the framework does with any command's result, from its
-- declaration (see aitbc.cli.registry): --json FIELDS (field selection),
-- --jq EXPR (the jq language, through libjq), -q/--quiet (only the id), and
-- --limit/--offset on lists the node does not page itself.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local M = {}

local Shape = {}
Shape.__index = Shape

local function usage(message, hint, code)
  errors.raise("usage", message, hint, { code = code or "usage_error" })
end

local function field_list(text)
  local fields = {}
  for f in text:gmatch("[^,]+") do
    f = f:match("^%s*(.-)%s*$")
    if f ~= "" then fields[#fields + 1] = f end
  end
  return fields
end

local function available(names)
  local sorted = {}
  for _, n in ipairs(names) do sorted[#sorted + 1] = n end
  table.sort(sorted)
  return table.concat(sorted, ", ")
end

--- Compiles a jq expression: a usage error when it does not compile, a
-- failure naming the package when libjq cannot be loaded.
local function compile_jq(expr)
  local program, message, kind = require("aitbc.native.jq").compile(expr)
  if program then return program end
  if kind == "unavailable" then
    errors.raise("failure", "--jq needs libjq, which could not be loaded: " .. message,
      "install it (Debian: apt-get install libjq1), or use --json FIELDS / --output json without --jq",
      { code = "jq_unavailable" })
  end
  message = message:gsub("\n", " "):gsub("%s*;%s*jq: %d+ compile errors?$", ""):gsub("%s+", " ")
  usage("--jq: " .. message, "see https://jqlang.github.io/jq/manual/ for the language", "jq_compile")
end

--- Checks -q, --json and --jq against the declaration before the command
-- runs (a typo must not cost a submitted job).  Returns the shape to apply
-- to the result (nil when none was asked for), or false after --json alone
-- listed the fields.
function M.prepare(decl, globals)
  local quiet, fields_opt, jq = globals.quiet, globals.json, globals.jq
  if not (quiet or fields_opt or jq) then return nil end
  if quiet and (fields_opt or jq) then
    usage("-q/--quiet prints only the id; it does not go with --json or --jq", "choose one of them")
  end
  local shape = setmetatable({ quiet = quiet, list = decl.list, id_field = decl.id_field, declared = decl.fields,
    path = decl.path }, Shape)
  if fields_opt == true then
    if not decl.fields then
      usage("'aitbc " .. decl.path .. "' declares no field list for --json",
        "see its whole document with --output json, then pick top-level fields: --json FIELD,FIELD", "no_fields")
    end
    for _, f in ipairs(decl.fields) do io.stdout:write(f, "\n") end
    return false
  end
  if fields_opt then
    shape.fields = field_list(fields_opt)
    if #shape.fields == 0 then usage("--json needs field names, e.g. --json " .. (decl.fields or { "id" })[1]) end
    if decl.fields then
      local known = {}
      for _, f in ipairs(decl.fields) do known[f] = true end
      for _, f in ipairs(shape.fields) do
        if not known[f] then
          usage("unknown JSON field '" .. f .. "' for 'aitbc " .. decl.path .. "'",
            "available fields" .. (decl.list and " (of each item)" or "") .. ": " .. available(decl.fields),
            "unknown_field")
        end
      end
    end
  end
  if jq then shape.jq = compile_jq(jq) end
  return shape
end

local function pick(record, fields)
  local out = {}
  for _, f in ipairs(fields) do
    local v = record[f]
    if v == nil then v = json.null end
    out[f] = v
  end
  return out
end

--- A command without a declared field list: the fields are what its
-- result holds (of each item for a list); a name it does not hold is refused.
function Shape:check_fields(records)
  if self.declared then return end
  local seen = {}
  for _, r in ipairs(records) do
    if type(r) == "table" then for k in pairs(r) do seen[k] = true end end
  end
  if #records == 0 then return end
  for _, f in ipairs(self.fields) do
    if not seen[f] then
      local names = {}
      for k in pairs(seen) do names[#names + 1] = tostring(k) end
      usage("unknown JSON field '" .. f .. "' for 'aitbc " .. self.path .. "'", "available fields: " .. available(names),
        "unknown_field")
    end
  end
end

--- The records of a list result (the declared key), or nil.
function Shape:records(data)
  local list = self.list and type(data) == "table" and data[self.list]
  return type(list) == "table" and list or nil
end

--- Field selection: a list gives an array of the chosen fields of each
-- item (as gh does), anything else an object of the chosen fields.
function Shape:select(data)
  if not self.fields or type(data) ~= "table" then return data end
  local list = self:records(data)
  if list then
    self:check_fields(list)
    local out = json.array()
    for i, item in ipairs(list) do out[i] = pick(item, self.fields) end
    return out
  end
  self:check_fields { data }
  return pick(data, self.fields)
end

local function write_line(text) io.stdout:write(text, "\n") end

--- Applies the shape: prints the ids (-q) or the jq results and returns nil
-- (done), or returns the data to print as usual (selected with --json).
function Shape:apply(data)
  if self.quiet then
    local id = self.id_field
    if not id then return nil end
    local list = self:records(data)
    for _, r in ipairs(list or { data }) do
      local v = type(r) == "table" and r[id]
      if v ~= nil and v ~= json.null and v ~= false then write_line(tostring(v)) end
    end
    return nil
  end
  data = self:select(data)
  if self.jq then
    local ok, message = self.jq:run(json.encode(data), true, write_line)
    if not ok then errors.raise("failure", message, "check the --jq expression against --output json", { code = "jq_error" }) end
    return nil
  end
  return data
end

--- --limit/--offset on a list the node does not page: applied here.
function M.page_locally(decl, opts, data)
  if not decl.list or decl.paged or type(data) ~= "table" then return data end
  local list = data[decl.list]
  if type(list) ~= "table" then return data end
  local offset, limit = opts.offset or 0, opts.limit
  if offset == 0 and (not limit or limit >= #list) then return data end
  local page = json.array()
  for i = offset + 1, math.min(#list, offset + (limit or #list)) do page[#page + 1] = list[i] end
  data[decl.list] = page
  return data
end

return M
