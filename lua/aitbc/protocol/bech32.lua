--- Bech32 (BIP-173): checksummed base32 strings such as AITBC addresses.
local bech32 = {}

local CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
local GEN = { 0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3 }
local VALUE = {}
for i = 1, #CHARSET do VALUE[CHARSET:sub(i, i)] = i - 1 end

local function polymod(values)
  local chk = 1
  for _, v in ipairs(values) do
    local top = chk >> 25
    chk = ((chk & 0x1ffffff) << 5) ~ v
    for i = 1, 5 do
      if (top >> (i - 1)) & 1 == 1 then chk = chk ~ GEN[i] end
    end
  end
  return chk
end

local function hrp_expand(hrp)
  local out = {}
  for i = 1, #hrp do out[#out + 1] = hrp:byte(i) >> 5 end
  out[#out + 1] = 0
  for i = 1, #hrp do out[#out + 1] = hrp:byte(i) & 31 end
  return out
end

local function with_data(hrp, data)
  local values = hrp_expand(hrp)
  for _, d in ipairs(data) do values[#values + 1] = d end
  return values
end

--- encode(hrp, data) with data a list of 5-bit values.
function bech32.encode(hrp, data)
  local values = with_data(hrp, data)
  for _ = 1, 6 do values[#values + 1] = 0 end
  local mod = polymod(values) ~ 1
  local out = { hrp, "1" }
  for _, d in ipairs(data) do out[#out + 1] = CHARSET:sub(d + 1, d + 1) end
  for i = 0, 5 do
    local v = (mod >> (5 * (5 - i))) & 31
    out[#out + 1] = CHARSET:sub(v + 1, v + 1)
  end
  return table.concat(out)
end

--- decode(text) -> hrp, data (5-bit values) | nil, reason
function bech32.decode(text)
  if type(text) ~= "string" then return nil, "not a string" end
  if #text > 90 then return nil, "longer than 90 characters" end
  for i = 1, #text do
    local b = text:byte(i)
    if b < 33 or b > 126 then return nil, "character out of range" end
  end
  if text:lower() ~= text and text:upper() ~= text then return nil, "mixed case" end
  text = text:lower()
  local pos = text:match(".*()1")
  if not pos then return nil, "no separator '1'" end
  if pos == 1 then return nil, "empty human-readable part" end
  if pos + 7 > #text + 1 then return nil, "checksum too short" end
  local hrp, data = text:sub(1, pos - 1), {}
  for i = pos + 1, #text do
    local v = VALUE[text:sub(i, i)]
    if not v then return nil, "invalid character '" .. text:sub(i, i) .. "'" end
    data[#data + 1] = v
  end
  if polymod(with_data(hrp, data)) ~= 1 then return nil, "checksum does not match (a typo?)" end
  for _ = 1, 6 do table.remove(data) end
  return hrp, data
end

--- Regroups bits: a byte string into 5-bit values (to = 5), or back (to = 8).
function bech32.convert(values, from, to, pad)
  local acc, bits, out, maxv = 0, 0, {}, (1 << to) - 1
  for _, v in ipairs(values) do
    if v < 0 or (v >> from) ~= 0 then return nil, "value out of range" end
    acc = (acc << from) | v
    bits = bits + from
    while bits >= to do
      bits = bits - to
      out[#out + 1] = (acc >> bits) & maxv
    end
  end
  if pad then
    if bits > 0 then out[#out + 1] = (acc << (to - bits)) & maxv end
  elseif bits >= from or ((acc << (to - bits)) & maxv) ~= 0 then
    return nil, "invalid padding"
  end
  return out
end

function bech32.bytes_to_words(s) return bech32.convert({ s:byte(1, -1) }, 8, 5, true) end

function bech32.words_to_bytes(words)
  local bytes, err = bech32.convert(words, 5, 8, false)
  if not bytes then return nil, err end
  return string.char(table.unpack(bytes))
end

return bech32
