--- CSV (RFC 4180): quoted fields with commas, line breaks and doubled
-- quotes; CRLF or LF; the first row names the columns.  Numbers in plain
-- decimal notation become numbers.
local M = {}

local function value(text, quoted)
  if quoted then return text end
  local n = text:match("^%s*(-?%d+%.?%d*)%s*$") or text:match("^%s*(-?%.%d+)%s*$")
  return n and tonumber(n) or text
end

--- parse(text) -> {header = {...}, rows = {{column = value}}} | nil, err
function M.parse(text)
  if type(text) ~= "string" then return nil, "not text" end
  local records, record, field, quoted = {}, {}, {}, false
  local i, n = 1, #text
  local in_quotes = false
  while i <= n do
    local c = text:sub(i, i)
    if in_quotes then
      if c == '"' then
        if text:sub(i + 1, i + 1) == '"' then
          field[#field + 1] = '"'
          i = i + 1
        else
          in_quotes = false
        end
      else
        field[#field + 1] = c
      end
    elseif c == '"' and #field == 0 then
      in_quotes, quoted = true, true
    elseif c == "," then
      record[#record + 1] = value(table.concat(field), quoted)
      field, quoted = {}, false
    elseif c == "\n" or c == "\r" then
      if c == "\r" and text:sub(i + 1, i + 1) == "\n" then i = i + 1 end
      record[#record + 1] = value(table.concat(field), quoted)
      records[#records + 1] = record
      record, field, quoted = {}, {}, false
    else
      field[#field + 1] = c
    end
    i = i + 1
  end
  if in_quotes then return nil, "a quoted field is not closed" end
  if #field > 0 or #record > 0 then
    record[#record + 1] = value(table.concat(field), quoted)
    records[#records + 1] = record
  end
  if #records == 0 then return nil, "it is empty" end
  local header = records[1]
  for c, name in ipairs(header) do header[c] = tostring(name) end
  local rows = {}
  for r = 2, #records do
    local rec = records[r]
    if not (#rec == 1 and rec[1] == "") then -- blank lines
      if #rec ~= #header then
        return nil, string.format("row %d has %d fields, the header %d", r, #rec, #header)
      end
      local row = {}
      for c, name in ipairs(header) do row[name] = rec[c] end
      rows[#rows + 1] = row
    end
  end
  return { header = header, rows = rows }
end

return M
