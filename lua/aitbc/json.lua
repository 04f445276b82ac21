--- JSON: decoding through lua-cjson, encoding here so that output is
-- deterministic (sorted keys), optionally pretty, and arrays are explicit.
-- `json.array(t)` marks a table (empty or not) as an array; `json.null`
-- stands for null.
local cjson = require "cjson.safe"
local native = require "aitbc.native.json"

local json = { null = cjson.null }

local ARRAY = native.array_mt

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

--- encode(value [, {pretty=true}]) -> text.  Keys are always sorted, so
-- the compact form is canonical (no spaces, sorted keys).
function json.encode(value, opts)
  return native.encode(value, opts and opts.pretty)
end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

--- A Lua string as a JSON string literal.
function json.quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

return json
