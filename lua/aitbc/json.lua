--- JSON: decoding through lua-cjson, encoding here so that output is
-- deterministic (sorted keys), optionally pretty, and arrays are explicit.
-- `json.array(t)` marks a table (empty or not) as an array; `json.null`
-- stands for null.
local cjson = require "cjson.safe"

local json = { null = cjson.null }

local ARRAY = { __name = "json.array" }

function json.array(t)
  return setmetatable(t or {}, ARRAY)
end

function json.is_array(t)
  if getmetatable(t) == ARRAY then return true end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local decoder = cjson.new()
decoder.decode_max_depth(64)

-- lua-cjson reads every number as a float; whole numbers become integers
-- again so that counts and amounts stay integers.  (Beyond 2^53 precision
-- is already lost in cjson: amounts that large travel as strings.)
local function integers(v)
  if type(v) == "table" then
    for k, item in pairs(v) do
      if type(item) == "number" or type(item) == "table" then v[k] = integers(item) end
    end
  elseif math.type(v) == "float" and v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
    return math.tointeger(v)
  end
  return v
end

--- decode(text) -> value | nil, err
function json.decode(text)
  if type(text) ~= "string" then return nil, "expected a JSON string" end
  local value, err = decoder.decode(text)
  if value == nil and err then
    return nil, "invalid JSON: " .. tostring(err):gsub("^Expected", "expected")
  end
  return integers(value)
end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end
json.quote = quote

local function number(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v or v == math.huge or v == -math.huge then return "null" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
  return string.format("%.14g", v)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" and type(k) ~= "number" then
      error("cannot encode a table key of type " .. type(k), 0)
    end
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  return keys
end

local function encode(v, indent, depth, out)
  local tv = type(v)
  if v == nil or v == cjson.null then
    out[#out + 1] = "null"
  elseif tv == "boolean" then
    out[#out + 1] = tostring(v)
  elseif tv == "number" then
    out[#out + 1] = number(v)
  elseif tv == "string" then
    out[#out + 1] = quote(v)
  elseif tv == "table" then
    if depth > 64 then error("cannot encode: nesting deeper than 64 (a cycle?)", 0) end
    local pad = indent and ("\n" .. string.rep(indent, depth + 1)) or ""
    local close = indent and ("\n" .. string.rep(indent, depth)) or ""
    local sep = indent and ": " or ":"
    if json.is_array(v) then
      if #v == 0 then out[#out + 1] = "[]" return end
      out[#out + 1] = "["
      for i = 1, #v do
        out[#out + 1] = (i > 1 and "," or "") .. pad
        encode(v[i], indent, depth + 1, out)
      end
      out[#out + 1] = close .. "]"
    else
      local keys = sorted_keys(v)
      if #keys == 0 then out[#out + 1] = "{}" return end
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        local item = v[k]
        if item == nil then item = v[tonumber(k)] end
        out[#out + 1] = (i > 1 and "," or "") .. pad .. quote(k) .. sep
        encode(item, indent, depth + 1, out)
      end
      out[#out + 1] = close .. "}"
    end
  else
    error("cannot encode a " .. tv .. " as JSON", 0)
  end
end

--- encode(value [, {pretty=true}]) -> text.  Keys are always sorted, so
-- the compact form is canonical (no spaces, sorted keys).
function json.encode(value, opts)
  local out = {}
  encode(value, opts and opts.pretty and "  " or nil, 0, out)
  return table.concat(out)
end

return json
