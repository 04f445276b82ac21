--- What makes an answer good enough for the older Python CLI, for one
-- fixture of tests/fixtures/upstream_cli_requests.json: used by the replay
-- (tests/upstream_compat_spec.lua) and by the recording
-- (tests/support/upstream/record.lua) to mark fixtures pending.
local json = require "aitbc.json"

local M = {}

--- The value at a dotted path ("items.1.state") of a decoded document.
function M.field(doc, path)
  local v = doc
  for part in path:gmatch("[^%.]+") do
    if type(v) ~= "table" then return nil end
    local i = tonumber(part)
    local nxt = v[i or part]
    if nxt == nil and i then nxt = v[part] end
    v = nxt
  end
  if v == json.null then return nil end
  return v
end

local function listed(status, accepts)
  for _, s in ipairs(accepts) do if s == status then return true end end
  return false
end

local function accepted(list)
  local parts = {}
  for i, s in ipairs(list) do parts[i] = tostring(s) end
  return table.concat(parts, "/")
end

--- " (code: message)" of the node's error, when the answer is one.
local function error_text(doc)
  local e = type(doc) == "table" and doc.error
  if type(e) ~= "table" then return "" end
  return string.format(" (%s: %s)", tostring(e.code), tostring(e.message))
end

--- The first of names (a name or a list of them) that item has.
local function first_field(item, names)
  if type(names) == "string" then names = { names } end
  for _, n in ipairs(names) do
    local v = M.field(item, n)
    if v ~= nil then return v, n end
  end
  return nil, names[1]
end

local function check_items(fixture, doc)
  local rule = fixture.expect_items
  if not rule then return nil end
  -- the older coordinator answered a bare list; ours puts it under a name
  local items = json.is_array(doc) and doc or M.field(doc, rule.list)
  if type(items) ~= "table" then return "the answer has no list " .. rule.list end
  if #items < (rule.min or 0) then
    return string.format("the answer lists %d item(s), at least %d expected", #items, rule.min)
  end
  for i, item in ipairs(items) do
    local got, name = first_field(item, rule.field)
    if got ~= rule.equals then
      return string.format("%s[%d].%s is %s: the filter was not applied (%s)", rule.list, i, name, tostring(got),
        rule.why or ("only " .. tostring(rule.equals) .. " expected"))
    end
  end
  return nil
end

--- problems(fixture, status, body) -> list of what the older CLI would not
-- accept in this answer (empty: it passes).  `values` holds the
-- placeholders known so far: a capture of one already known must match it.
function M.problems(fixture, status, body, values)
  local out = {}
  local doc = body and body ~= "" and json.decode(body) or nil
  if not listed(status, fixture.accepts) then
    out[#out + 1] = string.format("the node answers %d%s; the older CLI accepts only %s", status, error_text(doc),
      accepted(fixture.accepts))
    return out
  end
  -- a deliberate answer the older CLI does not expect (fixture.deviation says why): its message must say the fix
  if fixture.expect_error then
    local message = type(doc) == "table" and type(doc.error) == "table" and doc.error.message or ""
    if not tostring(message):find(fixture.expect_error, 1, true) then
      out[#out + 1] = "the error does not say " .. fixture.expect_error .. " (it says: " .. tostring(message) .. ")"
    end
  end
  for _, f in ipairs(fixture.reads or {}) do
    if M.field(doc, f) == nil then out[#out + 1] = "the answer lacks " .. f .. ", which the older CLI reads" end
  end
  for placeholder, f in pairs(fixture.captures or {}) do
    local got = M.field(doc, f)
    if got == nil then
      out[#out + 1] = string.format("the answer lacks %s (it feeds %s)", f, placeholder)
    elseif values and values[placeholder] and values[placeholder] ~= got then
      out[#out + 1] = string.format("the answer's %s is %s, not %s (%s)", f, tostring(got), placeholder,
        tostring(values[placeholder]))
    end
  end
  out[#out + 1] = check_items(fixture, doc)
  table.sort(out)
  return out
end

--- A decoded path as it goes on the wire: percent-encoded again, but the
-- characters a path may carry as they are.
function M.encode_path(path)
  return (path:gsub("[^%w%-%._~/:@!$&'()*+,;=]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- The placeholders ("<job_id>") a text names.
function M.placeholders(text)
  local out = {}
  for p in text:gmatch("<[%w_]+>") do out[#out + 1] = p end
  return out
end

--- Text with every placeholder replaced by its value (nil, and the first
-- missing placeholder, when one has none).
function M.substitute(text, values)
  local missing
  local out = text:gsub("<[%w_]+>", function(p)
    if values[p] == nil then
      missing = missing or p
      return p
    end
    return values[p]
  end)
  if missing then return nil, missing end
  return out
end

--- Runs an action between the older CLI's commands: our CLI's commands in
-- order (ours(args) runs one and returns its result), each taking the
-- placeholders it `captures` from its JSON output into values.  Returns
-- nil and why when a command failed or a placeholder it needs has none.
function M.run_action(action, values, ours)
  for _, c in ipairs(action.commands) do
    local args = {}
    for i, a in ipairs(c.args) do
      local missing
      args[i], missing = M.substitute(a, values)
      if not args[i] then return nil, "needs " .. missing .. ", which no earlier answer gave" end
    end
    local r = ours(args)
    if r.code ~= 0 then return nil, "aitbc " .. table.concat(args, " ") .. " failed: " .. r.err end
    for p, field in pairs(c.captures or {}) do
      local v = M.field(r.json(), field)
      if v == nil then return nil, "aitbc " .. table.concat(args, " ") .. " gave no " .. field end
      values[p] = tostring(v)
    end
  end
  return true
end

return M
