--- A small YAML emitter for --output yaml (block style, sorted keys).
local json = require "aitbc.json"

local yaml = {}

local plain_unsafe = {
  ["true"] = true, ["false"] = true, ["null"] = true, ["yes"] = true, ["no"] = true,
  ["on"] = true, ["off"] = true, ["~"] = true, [""] = true,
}

local function scalar(v)
  if v == nil or v == json.null then return "null" end
  if type(v) == "boolean" then return tostring(v) end
  if type(v) == "number" then return json.encode(v) end
  local s = tostring(v)
  if plain_unsafe[s:lower()] or tonumber(s) or s:find("^[%s%-%?:,%[%]{}#&*!|>'\"%%@`]")
    or s:find(":%s") or s:find("%s#") or s:find("[%c]") or s:find("%s$") then
    return json.quote(s)
  end
  return s
end

local function is_empty(t) return next(t) == nil end

local function emit(v, indent, out)
  local pad = string.rep("  ", indent)
  if type(v) ~= "table" or v == json.null then
    out[#out + 1] = pad .. scalar(v)
  elseif json.is_array(v) then
    for _, item in ipairs(v) do
      if type(item) == "table" and item ~= json.null and not is_empty(item) then
        local sub = {}
        emit(item, indent + 1, sub)
        sub[1] = pad .. "- " .. sub[1]:gsub("^%s+", "")
        for _, line in ipairs(sub) do out[#out + 1] = line end
      else
        out[#out + 1] = pad .. "- " .. (type(item) == "table" and (json.is_array(item) and "[]" or "{}") or scalar(item))
      end
    end
  else
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local item = v[k]
      if item == nil then item = v[tonumber(k)] end
      if type(item) == "table" and item ~= json.null and not is_empty(item) then
        out[#out + 1] = pad .. scalar(k) .. ":"
        emit(item, indent + 1, out)
      elseif type(item) == "table" and item ~= json.null then
        out[#out + 1] = pad .. scalar(k) .. ": " .. (json.is_array(item) and "[]" or "{}")
      else
        out[#out + 1] = pad .. scalar(k) .. ": " .. scalar(item)
      end
    end
  end
end

function yaml.encode(value)
  if type(value) == "table" and value ~= json.null and is_empty(value) then
    return json.is_array(value) and "[]\n" or "{}\n"
  end
  local out = {}
  emit(value, 0, out)
  return table.concat(out, "\n") .. "\n"
end

return yaml
