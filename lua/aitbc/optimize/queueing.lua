--- How many servers keep the queue wait under a target: Erlang C (M/M/c),
-- widened for service times that vary more (or less) than exponential ones
-- by the Allen–Cunneen approximation (M/G/c: the wait times (Ca² + Cs²)/2,
-- Ca² = 1 for Poisson arrivals).
local M = {}

--- Probability that a job waits, with c servers and a offered load
-- (erlangs, arrival rate × mean service time); 1 when c <= a (the queue
-- grows without bound).
function M.erlang_c(c, a)
  if a <= 0 then return 0 end
  if c <= a then return 1 end
  local b = 1 -- Erlang B, by the stable recurrence
  for k = 1, c do b = a * b / (k + a * b) end
  return c * b / (c - a * (1 - b))
end

--- Mean queue wait (seconds) with c servers, arrival rate lambda (jobs/s),
-- mean service time s (seconds) and squared coefficient of variation cs2
-- of the service times (1: exponential).  math.huge when c cannot keep up.
function M.wait(c, lambda, s, cs2)
  local a = lambda * s
  if a <= 0 then return 0 end
  if c <= a then return math.huge end
  return M.erlang_c(c, a) * s / (c - a) * (1 + (cs2 or 1)) / 2
end

--- The fewest servers whose mean queue wait is at most target seconds.
function M.servers_needed(lambda, s, target, cs2)
  if lambda <= 0 or s <= 0 then return 0 end
  local c = math.floor(lambda * s) + 1
  while M.wait(c, lambda, s, cs2) > target and c < 100000 do c = c + 1 end
  return c
end

return M
