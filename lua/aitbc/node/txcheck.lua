--- Shape checks of chain transactions, shared by the chain and governance:
-- each refuses with a 400 naming the field.
local addresses = require "aitbc.protocol.address"
local json = require "aitbc.json"
local util = require "aitbc.node.util"

local fail = util.fail

local M = {}

--- An amount as transactions carry it: a decimal string of base units, no
-- sign, no leading zeros, more than 0 and at most 18 digits.
function M.units(text, field)
  if type(text) ~= "string" or not text:match("^[1-9]%d*$") or #text > 18 then
    fail(400, "invalid_amount", field .. " must be a whole number of base units more than 0, as a string without "
      .. "leading zeros (1 AITBC = 10^9 units), e.g. \"2500000000\"", field)
  end
  return math.tointeger(tonumber(text))
end

function M.only_fields(t, allowed, prefix)
  for k in pairs(t) do
    if type(k) ~= "string" or not allowed[k] then
      local names = {}
      for name in pairs(allowed) do names[#names + 1] = prefix .. name end
      table.sort(names)
      fail(400, "unknown_field", prefix .. tostring(k) .. " is not a field of this transaction (it has "
        .. table.concat(names, ", ") .. ")", prefix .. tostring(k))
    end
  end
end

--- An address inside a signed transaction: valid and written in lower case.
-- The signature covers the transaction as sent, so the node cannot rewrite
-- an upper-case address to its one spelling: it refuses it.
function M.address(value, field)
  if type(value) ~= "string" or not addresses.parse(value) then
    fail(400, "invalid_address", field .. " is not an AITBC address", field)
  end
  if value ~= value:lower() then
    fail(400, "invalid_address", field .. " must be written in lower case (" .. value:lower()
      .. "): the signature covers the transaction as sent, so sign it with the lower-case address", field)
  end
end

function M.is_object(v) return type(v) == "table" and not (json.is_array(v) and #v > 0) end

--- Text in a transaction: a string of 1 to max bytes of UTF-8.
function M.text(value, field, max)
  if type(value) ~= "string" or value == "" or #value > max or not utf8.len(value) then
    fail(400, "invalid_text", field .. " must be text of 1 to " .. max .. " bytes", field)
  end
  return value
end

return M
