--- Images for vision models: the format is sniffed from the bytes (PNG,
-- JPEG, WebP, GIF — never trusted from a name), the size is capped, and the
-- dimensions are read from the header.  On the wire an image is
-- {data = base64, format, width, height, bytes, sha256}.
local crypto = require "aitbc.crypto"

local M = { MAX_BYTES = 4 * 1024 * 1024 }

local function u16be(s, i) return s:byte(i) * 256 + s:byte(i + 1) end
local function u16le(s, i) return s:byte(i) + s:byte(i + 1) * 256 end
local function u24le(s, i) return s:byte(i) + s:byte(i + 1) * 256 + s:byte(i + 2) * 65536 end
local function u32be(s, i) return ((s:byte(i) * 256 + s:byte(i + 1)) * 256 + s:byte(i + 2)) * 256 + s:byte(i + 3) end

local function jpeg_size(s)
  local i = 3
  while i + 8 <= #s do
    if s:byte(i) ~= 0xFF then return nil end
    local marker = s:byte(i + 1)
    if marker >= 0xC0 and marker <= 0xCF and marker ~= 0xC4 and marker ~= 0xC8 and marker ~= 0xCC then
      return u16be(s, i + 7), u16be(s, i + 5) -- width, height
    end
    i = i + 2 + u16be(s, i + 2)
  end
end

local function webp_size(s)
  local chunk = s:sub(13, 16)
  if chunk == "VP8 " and #s >= 30 then return u16le(s, 27) & 0x3FFF, u16le(s, 29) & 0x3FFF end
  if chunk == "VP8L" and #s >= 25 then
    local b = s:byte(22) | s:byte(23) << 8 | s:byte(24) << 16 | s:byte(25) << 24
    return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
  end
  if chunk == "VP8X" and #s >= 30 then return u24le(s, 25) + 1, u24le(s, 28) + 1 end
end

--- sniff(bytes) -> {format, width, height} | nil, why
function M.sniff(s)
  if s:sub(1, 8) == "\137PNG\r\n\26\n" and s:sub(13, 16) == "IHDR" then
    return { format = "png", width = u32be(s, 17), height = u32be(s, 21) }
  end
  if s:sub(1, 3) == "\255\216\255" then
    local w, h = jpeg_size(s)
    if w then return { format = "jpeg", width = w, height = h } end
    return nil, "a JPEG without a readable frame header"
  end
  if s:sub(1, 4) == "RIFF" and s:sub(9, 12) == "WEBP" then
    local w, h = webp_size(s)
    if w then return { format = "webp", width = w, height = h } end
    return nil, "a WebP without a readable header"
  end
  if s:sub(1, 6) == "GIF87a" or s:sub(1, 6) == "GIF89a" then
    return { format = "gif", width = u16le(s, 7), height = u16le(s, 9) }
  end
  return nil, "not a PNG, JPEG, WebP or GIF image"
end

M.MAX_SIDE = 16384

--- An image from its bytes: the wire form.
function M.from_bytes(bytes)
  if #bytes > M.MAX_BYTES then return nil, string.format("%d bytes, more than %d MiB", #bytes, M.MAX_BYTES >> 20) end
  local info, why = M.sniff(bytes)
  if not info then return nil, why end
  if info.width < 1 or info.height < 1 or info.width > M.MAX_SIDE or info.height > M.MAX_SIDE then
    return nil, string.format("a %s of %dx%d pixels (1 to %d a side)", info.format, info.width, info.height, M.MAX_SIDE)
  end
  info.bytes, info.sha256 = #bytes, crypto.hex(crypto.sha256(bytes))
  info.data = crypto.base64(bytes)
  return info
end

--- Checks a list of wire images ({data = base64, ...}): decodes, sniffs and
-- measures each again (nothing the sender says about it is trusted).
function M.check_list(list, field, max, v)
  if type(list) ~= "table" or #list == 0 or #list > max then
    v.invalid(field, "must be a list of 1 to " .. max .. " images {data: base64}")
  end
  local out = {}
  for i, img in ipairs(list) do
    local at = field .. "[" .. i .. "]"
    if type(img) ~= "table" or type(img.data) ~= "string" then v.invalid(at .. ".data", "is required (base64)") end
    if #img.data > M.MAX_BYTES * 4 // 3 + 8 then v.invalid(at, "is larger than " .. (M.MAX_BYTES >> 20) .. " MiB") end
    local bytes = crypto.unbase64(img.data)
    if not bytes then v.invalid(at .. ".data", "is not base64") end
    local info, why = M.from_bytes(bytes)
    if not info then v.invalid(at, "is " .. why) end
    out[i] = info
  end
  return out
end

return M
