--- Amounts: integer base units everywhere (1 AITBC = 10^9 units); decimal
-- strings only at the edges.  No floating point touches an amount, except
-- that a JSON number a client sent is read through its shortest decimal form.
local money = { UNIT = 1000000000, DECIMALS = 9 }

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
  if #whole > 10 then return nil, "amount too large" end
  local units = (tonumber(whole ~= "" and whole or "0") // 1) * money.UNIT
    + (tonumber((frac .. string.rep("0", money.DECIMALS)):sub(1, money.DECIMALS)) // 1)
  units = math.tointeger(units)
  if sign == "-" then units = -units end
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
