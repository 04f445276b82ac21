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

--- How deep values may nest, for the decoder and the encoder alike: what
-- one reads, the other can write.
json.MAX_DEPTH = native.MAX_DEPTH

-- Bare NaN, Infinity and hexadecimal numbers are not JSON.
local decoder = cjson.new()
decoder.decode_max_depth(json.MAX_DEPTH)
decoder.decode_invalid_numbers(false)

-- lua-cjson reads every number as a float; whole numbers become integers
-- again so that counts and amounts stay integers.  (Beyond 2^53 precision
-- is already lost in cjson: amounts that large travel as strings.)  A
-- number beyond a double's range (1e999) reads as infinity: refused.  Also
-- measures the nesting against max_depth.  `trail` holds the keys down to
-- the value (its path, built only when something is refused).
local function refuse(message, trail, depth)
  local path = ""
  for i = 1, depth do
    local k = trail[i]
    path = math.type(k) == "integer" and (path .. "[" .. k .. "]") or (path == "" and k or (path .. "." .. k))
  end
  error({ message = message, path = path ~= "" and path or nil }, 0)
end

local trail = {} -- decoding never yields, so one is enough

local EMPTY_ARRAY = native.EMPTY_ARRAY

local function normalize(v, depth, max_depth)
  if type(v) == "table" then
    if depth >= max_depth then refuse("nesting deeper than " .. max_depth .. " levels", trail, depth) end
    if v[1] == EMPTY_ARRAY and next(v, 1) == nil then return setmetatable({}, ARRAY) end
    for k, item in pairs(v) do
      if type(item) == "number" or type(item) == "table" then
        trail[depth + 1] = k
        v[k] = normalize(item, depth + 1, max_depth)
      end
    end
  elseif math.type(v) == "float" then
    if v ~= v or v == math.huge or v == -math.huge then refuse("a number out of range", trail, depth) end
    if v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return math.tointeger(v) end
  end
  return v
end

--- decode(text [, max_depth]) -> value | nil, err, path
-- max_depth (at most MAX_DEPTH) limits the nesting further; path names
-- where a refused value was ("payload.items[2].x"), when known.
-- An empty array comes back marked as one (json.array), so that it is
-- written back as [] and not {}.
function json.decode(text, max_depth)
  if type(text) ~= "string" then return nil, "expected a JSON string" end
  local marked = native.mark_empty_arrays(text)
  local value, err = decoder.decode(marked or text)
  if value == nil and err and marked then value, err = decoder.decode(text) end -- the error's position in the text as given
  if value == nil and err then
    return nil, "invalid JSON: " .. tostring(err):gsub("^Expected", "expected")
  end
  local ok, normalized = pcall(normalize, value, 0, math.min(max_depth or json.MAX_DEPTH, json.MAX_DEPTH))
  if not ok then
    if type(normalized) ~= "table" then error(normalized, 0) end
    local where = normalized.path and (" at " .. normalized.path) or ""
    return nil, "invalid JSON: " .. normalized.message .. where, normalized.path
  end
  return normalized
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
