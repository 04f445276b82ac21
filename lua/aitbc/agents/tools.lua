--- The tools an agent may use, each declared once: its name, what the model
-- is told (Ollama's tool schema), and what it does.  A tool runs on the miner
-- beside its Ollama; what it returns goes back to the model as a `tool`
-- message and into the job's events.  A tool never raises: a failure is an
-- observation the model can read ({error = "..."}).
--   run(args, env) env: {data = {name = {format, content}}, node = api client
--   or nil, chain_id, http_allow = {prefixes}}
local csv = require "aitbc.agents.csv"
local json = require "aitbc.json"
local sandbox = require "aitbc.native.sandbox"

local M = {}

local function schema(properties, required)
  return { type = "object", properties = properties, required = json.array(required or {}) }
end

local function str(description) return { type = "string", description = description } end
local function num(description) return { type = "number", description = description } end

local function dataset(env, name)
  local d = env.data and env.data[name]
  if not d then
    local names = {}
    for k in pairs(env.data or {}) do names[#names + 1] = k end
    table.sort(names)
    return nil, "no dataset " .. tostring(name) .. (#names > 0 and (" (there are: " .. table.concat(names, ", ") .. ")")
      or " (no data is attached)")
  end
  return d
end

-- ---- calculator: an arithmetic expression in a tiny sandbox ----

M.calculator = {
  description = "Evaluate an arithmetic expression exactly, e.g. (1250 * 1.05) - 80 or sqrt(2) * max(3, 4). "
    .. "Functions: abs, ceil, floor, sqrt, exp, log, sin, cos, tan, min, max, pi, huge.",
  parameters = schema({ expression = str("the expression, in plain arithmetic") }, { "expression" }),
  run = function(args)
    local expr = args.expression
    if type(expr) ~= "string" or #expr == 0 or #expr > 2000 then return { error = "expression must be text" } end
    local ok, value, kind = sandbox.run { name = "calculator", instructions = 100000, seconds = 1, memory = 1 << 20,
      code = "local _ENV = setmetatable({}, {__index = math}) return (" .. expr .. ")" }
    if not ok then return { error = (kind == "syntax" and "not an expression: " or "") .. tostring(value) } end
    if type(value) ~= "number" and type(value) ~= "boolean" then return { error = "the expression is not a number" } end
    return { result = value }
  end,
}

-- ---- lua: a small Lua program in a nested sandbox, over the data ----

M.lua = {
  description = "Run a short Lua 5.4 program and get what it returns (and prints). Attached datasets are in the "
    .. "table `data` (name -> text). Limits: 10 million instructions, 2 s, 16 MiB.",
  parameters = schema({ code = str("Lua source; `return` the answer") }, { "code" }),
  run = function(args, env)
    if type(args.code) ~= "string" or #args.code == 0 or #args.code > 64 * 1024 then return { error = "code must be text" } end
    local data = {}
    for name, d in pairs(env.data or {}) do data[name] = d.content end
    local ok, value, third, fourth = sandbox.run { name = "lua_tool", instructions = 1e7, seconds = 2,
      memory = 16 << 20, code = "data = ...\n" .. args.code, input = data }
    if not ok then -- value: the message, third: its kind, fourth: the stats
      return { error = third .. ": " .. tostring(value), output = fourth.output ~= "" and fourth.output or nil }
    end
    return { result = value, output = third.output ~= "" and third.output or nil } -- third: the stats
  end,
}

-- ---- csv_query: filter, aggregate and sort an attached CSV ----

local OPS = {
  ["="] = function(a, b) return a == b end, ["!="] = function(a, b) return a ~= b end,
  ["<"] = function(a, b) return a < b end, ["<="] = function(a, b) return a <= b end,
  [">"] = function(a, b) return a > b end, [">="] = function(a, b) return a >= b end,
  contains = function(a, b) return tostring(a):lower():find(tostring(b):lower(), 1, true) ~= nil end,
}

local function compare(op, a, b)
  if op ~= "contains" and type(a) ~= type(b) then
    if tonumber(a) and tonumber(b) then a, b = tonumber(a), tonumber(b) else a, b = tostring(a), tostring(b) end
  end
  local ok, r = pcall(OPS[op], a, b)
  return ok and r
end

local function extreme(values, better)
  local m
  for _, v in ipairs(values) do
    v = tonumber(v)
    if v and (not m or better(v, m)) then m = v end
  end
  return m
end

local AGGREGATES = {
  count = function(values) return #values end,
  sum = function(values) local s = 0 for _, v in ipairs(values) do s = s + (tonumber(v) or 0) end return s end,
  avg = function(values)
    local s, n = 0, 0
    for _, v in ipairs(values) do if tonumber(v) then s, n = s + tonumber(v), n + 1 end end
    return n > 0 and s / n or nil
  end,
  min = function(values) return extreme(values, function(a, b) return a < b end) end,
  max = function(values) return extreme(values, function(a, b) return a > b end) end,
}

local function filtered(rows, where)
  local out = {}
  for _, row in ipairs(rows) do
    local keep = true
    for _, w in ipairs(where or {}) do
      if not compare(w.op or "=", row[w.column], w.value) then keep = false break end
    end
    if keep then out[#out + 1] = row end
  end
  return out
end

local function aggregate(rows, agg, group_by)
  local fn = AGGREGATES[agg.fn or "count"]
  if not fn then return nil, "aggregate fn must be count, sum, avg, min or max" end
  local groups, order = {}, {}
  for _, row in ipairs(rows) do
    local key = group_by and tostring(row[group_by]) or "all"
    if not groups[key] then groups[key], order[#order + 1] = {}, key end
    local g = groups[key]
    g[#g + 1] = agg.column and row[agg.column] or 1
  end
  local out = json.array()
  for _, key in ipairs(order) do
    local r = { [agg.fn or "count"] = fn(groups[key]) }
    if group_by then r[group_by] = key end
    out[#out + 1] = r
  end
  return out
end

M.csv_query = {
  description = "Query an attached CSV dataset: filter rows (where), aggregate a column (count, sum, avg, min, max), "
    .. "optionally per group, sort and limit. Without aggregate it returns the matching rows.",
  parameters = schema({
    dataset = str("the dataset's name"),
    where = { type = "array", description = "conditions, all must hold",
      items = schema({ column = str("column"), op = str("=, !=, <, <=, >, >= or contains"), value = str("value") },
        { "column", "value" }) },
    aggregate = schema({ fn = str("count, sum, avg, min or max"), column = str("the column to aggregate") }, { "fn" }),
    group_by = str("a column to group by"),
    order_by = str("a column to sort by"), descending = { type = "boolean" },
    columns = { type = "array", items = { type = "string" }, description = "columns to return" },
    limit = num("at most this many rows (default 20)"),
  }, { "dataset" }),
  run = function(args, env)
    local d, err = dataset(env, args.dataset)
    if not d then return { error = err } end
    local parsed, perr = csv.parse(d.content)
    if not parsed then return { error = "the dataset is not CSV: " .. perr } end
    for _, w in ipairs(type(args.where) == "table" and args.where or {}) do
      if type(w) ~= "table" or not OPS[w.op or "="] then return { error = "each condition needs column, op and value" } end
    end
    local rows = filtered(parsed.rows, type(args.where) == "table" and args.where or nil)
    if type(args.aggregate) == "table" then
      local out, aerr = aggregate(rows, args.aggregate, args.group_by)
      if not out then return { error = aerr } end
      return { rows_matched = #rows, result = out }
    end
    if args.order_by then
      local col, desc = args.order_by, args.descending == true
      table.sort(rows, function(a, b)
        local x, y = a[col], b[col]
        if type(x) ~= type(y) then x, y = tostring(x), tostring(y) end
        if desc then return x > y end
        return x < y
      end)
    end
    local limit = math.min(math.tointeger(tonumber(args.limit) or 20) or 20, 200)
    local out = json.array()
    for i = 1, math.min(limit, #rows) do
      local r = rows[i]
      if type(args.columns) == "table" and #args.columns > 0 then
        local picked = {}
        for _, c in ipairs(args.columns) do picked[c] = r[c] end
        r = picked
      end
      out[i] = r
    end
    return { columns = parsed.header, rows_matched = #rows, rows = out }
  end,
}

-- ---- json_query: a path into an attached JSON dataset ----

--- Follows a path like items[0].price, items[*].name or totals.q3.
local function follow(value, path)
  local current = { value }
  for part in path:gmatch("[^%.]+") do
    local name, rest = part:match("^([^%[]*)(.*)$")
    local next_values = {}
    for _, v in ipairs(current) do
      if name ~= "" then v = type(v) == "table" and v[name] or nil end
      local list = { v }
      for index in rest:gmatch("%[([^%]]*)%]") do
        local expanded = {}
        for _, item in ipairs(list) do
          if type(item) == "table" then
            if index == "*" then
              for _, x in ipairs(item) do expanded[#expanded + 1] = x end
            elseif tonumber(index) then
              expanded[#expanded + 1] = item[math.tointeger(tonumber(index)) + 1]
            else
              expanded[#expanded + 1] = item[index:gsub("^[\"']", ""):gsub("[\"']$", "")]
            end
          end
        end
        list = expanded
      end
      for _, x in ipairs(list) do next_values[#next_values + 1] = x end
    end
    current = next_values
  end
  return current
end

M.json_query = {
  description = "Read values from an attached JSON dataset by path, e.g. totals.q3, items[0].price or items[*].name.",
  parameters = schema({ dataset = str("the dataset's name"), path = str("the path; empty for the whole document") },
    { "dataset" }),
  run = function(args, env)
    local d, err = dataset(env, args.dataset)
    if not d then return { error = err } end
    local doc, jerr = json.decode(d.content)
    if doc == nil then return { error = "the dataset is not JSON: " .. tostring(jerr) } end
    if type(args.path) ~= "string" or args.path == "" then return { result = doc } end
    local found = follow(doc, args.path)
    if #found == 0 then return { error = "nothing at " .. args.path } end
    return { result = (#found == 1 and not args.path:find("*", 1, true)) and found[1] or json.array(found) }
  end,
}

-- ---- read-only look-ups on the network ----

local function node_get(env, path, query)
  if not env.node then return nil, "this miner has no node to ask" end
  local ok, res = pcall(env.node.call, env.node, "GET", path, { query = query, retries = 0 })
  if not ok then return nil, type(res) == "table" and (res.message or res.code) or tostring(res) end
  return res
end

M.chain = {
  description = "Read the AITBC chain: an account's balance and stake, a transaction, a block, or the head.",
  parameters = schema({ query = str("account, tx, block or head"), id = str("the address, hash or height") },
    { "query" }),
  run = function(args, env)
    local paths = { account = "/accounts/", tx = "/transactions/", block = "/blocks/" }
    local chain = "/v1/chain/" .. (env.chain_id or "ait-devnet")
    local path
    if args.query == "head" then
      path = chain .. "/head"
    elseif paths[args.query] and type(args.id) == "string" and args.id:match("^[%w]+$") then
      path = chain .. paths[args.query] .. args.id
    else
      return { error = "query must be account, tx or block with an id, or head" }
    end
    local res, err = node_get(env, path)
    if not res then return { error = err } end
    res.tx, res.signature = nil, nil
    return { result = res }
  end,
}

M.marketplace = {
  description = "Read the GPU marketplace: offers (optionally for a model, with minimum VRAM or maximum price) or "
    .. "the pricing of a model.",
  parameters = schema({ query = str("offers or pricing"), model = str("GPU model, e.g. RTX 4090"),
    min_vram = num("GB"), max_price = num("AITBC per hour"), limit = num("how many offers (default 5)") }, { "query" }),
  run = function(args, env)
    local res, err
    if args.query == "offers" then
      res, err = node_get(env, "/v1/marketplace/offers", { model = args.model, min_vram = args.min_vram,
        max_price = args.max_price, limit = math.min(math.tointeger(tonumber(args.limit) or 5) or 5, 20) })
    elseif args.query == "pricing" and type(args.model) == "string" then
      res, err = node_get(env, "/v1/marketplace/pricing", { model = args.model })
    else
      return { error = "query must be offers, or pricing with a model" }
    end
    if not res then return { error = err } end
    return { result = res }
  end,
}

M.http_get = {
  description = "Fetch a web page or API over HTTP(S) GET, from the addresses this agent is allowed to read.",
  parameters = schema({ url = str("the full URL") }, { "url" }),
  run = function(args, env)
    local url = args.url
    if type(url) ~= "string" or not url:match("^https?://") then return { error = "url must start with http:// or https://" } end
    local allowed = false
    for _, prefix in ipairs(env.http_allow or {}) do
      if url:sub(1, #prefix) == prefix then allowed = true break end
    end
    if not allowed then return { error = "this agent may not read " .. url .. " (not in its http_allow list)" } end
    local res, err = require("aitbc.http").request { url = url, timeout = 10 }
    if not res then return { error = tostring(err and err.message or err) } end
    local body = res.body or ""
    return { status = res.status, content_type = res.headers["content-type"], body = body:sub(1, 16 * 1024),
      truncated = #body > 16 * 1024 or nil }
  end,
}

M.NAMES = { "calculator", "lua", "csv_query", "json_query", "chain", "marketplace", "http_get" }

--- Ollama's `tools` for these names.
function M.declarations(names)
  local out = json.array()
  for _, name in ipairs(names or {}) do
    local t = M[name]
    out[#out + 1] = { type = "function", ["function"] = { name = name, description = t.description,
      parameters = t.parameters } }
  end
  return out
end

--- Runs a tool; never raises.  -> result table, seconds
function M.call(name, args, env)
  local t = M[name]
  local started = os.clock()
  if not t or type(t) ~= "table" or not t.run then return { error = "no tool " .. tostring(name) }, 0 end
  if type(args) ~= "table" then args = {} end
  local ok, result = pcall(t.run, args, env or {})
  if not ok then result = { error = "the tool failed: " .. tostring(result) } end
  return result, os.clock() - started
end

return M
