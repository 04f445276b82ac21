--- Start-up benchmark: median wall time and peak RSS of help commands.
--   aitbc run bench/startup.lua [RUNS]   (or: make bench)
-- Budget (DESIGN.md §8): <= 5 ms median, <= 8 MB peak RSS.
local sys = require "aitbc.sys"

local runs = tonumber(arg[1]) or 200
local bin = assert(sys.exe_path())
local cases = {
  { "aitbc --help", { "--help" } },
  { "aitbc config --help", { "config", "--help" } },
  { "aitbc scenario run --help", { "scenario", "run", "--help" } },
  { "aitbc --version", { "--version" } },
}

local function measure(args)
  local times, peak = {}, 0
  for i = 1, runs do
    local t0 = sys.monotonic()
    local p = assert(sys.spawn { argv = { bin, table.unpack(args) }, stdout = "null", stderr = "null",
      env = { AITBC_HOME = "/nonexistent-aitbc-bench" } })
    local code = p:wait()
    times[i] = sys.monotonic() - t0
    assert(code == 0, "exit code " .. tostring(code))
    peak = math.max(peak, p:rusage().max_rss)
  end
  table.sort(times)
  return times[(runs + 1) // 2], times[math.ceil(runs * 0.95)], peak
end

print(string.format("aitbc start-up, %d runs each (%s)", runs, bin))
print(string.format("%-28s %10s %10s %12s", "command", "median", "p95", "peak RSS"))
local worst_median, worst_rss = 0, 0
for _, case in ipairs(cases) do
  local median, p95, rss = measure(case[2])
  worst_median, worst_rss = math.max(worst_median, median), math.max(worst_rss, rss)
  print(string.format("%-28s %8.2f ms %8.2f ms %9.2f MB", case[1], median * 1000, p95 * 1000, rss / 2 ^ 20))
end
print(string.format("budget: median <= 5 ms, RSS <= 8 MB: %s",
  (worst_median <= 0.005 and worst_rss <= 8 * 2 ^ 20) and "met" or "NOT met"))
