--- Amounts: integer base units everywhere (1 AITBC = 10^9 units); decimal
-- strings only at the edges.  No floating point touches an amount, except
-- that a JSON number a client sent is read through its shortest decimal form.
-- MAX, the whole supply of a chain (10^9 AITBC), bounds every amount, far
-- below where 64-bit units would overflow.
local money = { UNIT = 1000000000, DECIMALS = 9, MAX = 1000000000 * 1000000000 }

local MAX_WHOLE = tostring(money.MAX // money.UNIT)

--- parse("0.5") -> 500000000 | nil, err.  Accepts strings and numbers.
function money.parse(value)
  local text
  if math.type(value) == "integer" then
    text = tostring(value)
  elseif type(value) == "number" then
    if value ~= value or value == math.huge or value == -math.huge then return nil, "not a finite number" end
    text = string.format("%.9f", value)
  elseif type(value) == "string" then
    text = value:match("^%s*(.-)%s*$")
  else
    return nil, "expected a decimal amount"
  end
  local sign, whole, frac = text:match("^([-+]?)(%d*)%.?(%d*)$")
  if not sign or (whole == "" and frac == "") then return nil, "'" .. text .. "' is not a decimal amount" end
  frac = frac:gsub("0+$", "")
  if #frac > money.DECIMALS then return nil, "more than 9 decimal places" end
  -- compared as digits first: the product below must not overflow
  local digits = whole:match("^0*(%d*)$")
  local too_large = "more than the maximum, " .. MAX_WHOLE .. " AITBC"
  if #digits > #MAX_WHOLE or (#digits == #MAX_WHOLE and digits > MAX_WHOLE) then return nil, too_large end
  local units = math.tointeger(tonumber(digits ~= "" and digits or "0")) * money.UNIT
    + math.tointeger(tonumber((frac .. string.rep("0", money.DECIMALS)):sub(1, money.DECIMALS)))
  if units > money.MAX then return nil, too_large end
  if sign == "-" then units = -units end
  return units
end

--- An amount typed on the command line: units | raises a usage error naming
-- the option.  allow_zero: a price may be 0; a payment may not.
function money.from_option(text, option, allow_zero)
  local units, err = money.parse(text)
  if not units then
    require("aitbc.errors").raise("usage", option .. ": " .. err .. " (an amount in AITBC, e.g. 10 or 0.5)")
  end
  if units < 0 or (units == 0 and not allow_zero) then
    require("aitbc.errors").raise("usage", option .. " must be " .. (allow_zero and "0 or more" or "more than 0")
      .. ", got " .. text)
  end
  return units
end

--- format(500000000) -> "0.5"
function money.format(units)
  assert(math.type(units) == "integer", "amount must be integer units")
  local sign = units < 0 and "-" or ""
  units = math.abs(units)
  local whole, frac = units // money.UNIT, units % money.UNIT
  if frac == 0 then return sign .. tostring(whole) end
  return sign .. tostring(whole) .. "." .. (string.format("%09d", frac):gsub("0+$", ""))
end

return money
