--- A terminal chart of a series and its forecast, drawn with block
-- characters (eighths of a cell): the history dim, the forecast bright,
-- the 95 % upper bound marked with "·" above the forecast bars.
local M = {}

local BLOCKS = { "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█" }

--- Averages of consecutive groups of g values.
local function squeeze(values, g)
  local out = {}
  for i = 1, #values, g do
    local s, k = 0, 0
    for j = i, math.min(#values, i + g - 1) do s, k = s + values[j], k + 1 end
    out[#out + 1] = s / k
  end
  return out
end

--- Lines of the chart.  history, mean, hi95: lists of numbers; opts:
-- {width, height, style = function(text, style), label = "jobs"}.
function M.render(history, mean, hi95, opts)
  local width, height = math.max(20, (opts.width or 80) - 10), opts.height or 10
  local style = opts.style or function(t) return t end
  local total = #history + #mean
  local g = math.max(1, math.ceil(total / width))
  -- at most as much history as forecast, times three, so the forecast stays readable
  local keep = math.min(#history, math.max(#mean * 3, width * g - #mean))
  local h = squeeze(table.move(history, #history - keep + 1, #history, 1, {}), g)
  local f, u = squeeze(mean, g), squeeze(hi95, g)
  local top = 0
  for _, list in ipairs { h, f, u } do for _, v in ipairs(list) do top = math.max(top, v) end end
  if top <= 0 then top = 1 end
  local lines = {}
  for row = height, 1, -1 do
    local lo, hi = (row - 1) / height * top, row / height * top
    local cells = {}
    local function bar(v)
      if v >= hi then return BLOCKS[8] end
      if v <= lo then return " " end
      return BLOCKS[math.max(1, math.min(8, math.floor((v - lo) / (hi - lo) * 8 + 0.5)))]
    end
    for _, v in ipairs(h) do cells[#cells + 1] = style(bar(v), "dim") end
    for i, v in ipairs(f) do
      local c = bar(v)
      if c == " " and u[i] > lo and u[i] <= hi then c = "·" end
      cells[#cells + 1] = style(c, "cyan")
    end
    local label = (row == height or row == 1) and string.format("%8.1f ", row == height and top or 0) or "         "
    lines[#lines + 1] = label .. "│" .. table.concat(cells)
  end
  lines[#lines + 1] = "         └" .. string.rep("─", #h) .. "┴" .. string.rep("─", math.max(0, #f - 1))
  lines[#lines + 1] = string.format("          %-" .. math.max(1, #h) .. "s %s", "history (" .. (opts.label or "") .. ")",
    "forecast (· 95 % upper)")
  return lines
end

return M
