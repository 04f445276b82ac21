--- A small RGB canvas written as PNG, for the benchmark's images: filled
-- rectangles and circles on a background.  The image data is zlib with
-- stored (uncompressed) deflate blocks, which every PNG reader takes.
local M = {}

local CRC = {}
for n = 0, 255 do
  local c = n
  for _ = 1, 8 do c = (c & 1) == 1 and (0xEDB88320 ~ (c >> 1)) or (c >> 1) end
  CRC[n] = c
end

local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do c = CRC[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8) end
  return c ~ 0xFFFFFFFF
end

local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s do
    a = (a + s:byte(i)) % 65521
    b = (b + a) % 65521
  end
  return (b << 16) | a
end

local function chunk(kind, data)
  return string.pack(">I4", #data) .. kind .. data .. string.pack(">I4", crc32(kind .. data))
end

local function zlib_stored(raw)
  local parts = { "\120\1" } -- deflate, 32K window, no preset dictionary
  local at = 1
  repeat
    local block = raw:sub(at, at + 65534)
    at = at + #block
    local last = at > #raw and 1 or 0
    parts[#parts + 1] = string.char(last) .. string.pack("<I2I2", #block, (~#block) & 0xFFFF) .. block
  until at > #raw
  parts[#parts + 1] = string.pack(">I4", adler32(raw))
  return table.concat(parts)
end

local Canvas = {}
Canvas.__index = Canvas

--- canvas(width, height, {r, g, b} background)
function M.canvas(w, h, bg)
  local px = {}
  for i = 1, w * h do px[i] = bg end
  return setmetatable({ w = w, h = h, px = px }, Canvas)
end

function Canvas:set(x, y, color)
  if x >= 0 and y >= 0 and x < self.w and y < self.h then self.px[y * self.w + x + 1] = color end
end

function Canvas:rect(x, y, w, h, color)
  for yy = y, y + h - 1 do for xx = x, x + w - 1 do self:set(xx, yy, color) end end
end

function Canvas:circle(cx, cy, r, color)
  for yy = cy - r, cy + r do
    for xx = cx - r, cx + r do
      if (xx - cx) ^ 2 + (yy - cy) ^ 2 <= r * r then self:set(xx, yy, color) end
    end
  end
end

--- The PNG file's bytes.
function Canvas:png()
  local rows = {}
  for y = 0, self.h - 1 do
    local line = { "\0" } -- filter: none
    for x = 0, self.w - 1 do
      local c = self.px[y * self.w + x + 1]
      line[#line + 1] = string.char(c[1], c[2], c[3])
    end
    rows[#rows + 1] = table.concat(line)
  end
  return "\137PNG\r\n\26\n" .. chunk("IHDR", string.pack(">I4I4BBBBB", self.w, self.h, 8, 2, 0, 0, 0))
    .. chunk("IDAT", zlib_stored(table.concat(rows))) .. chunk("IEND", "")
end

M.crc32 = crc32
return M
