-- The fuzz target: a few thousand mutated requests against a real node;
-- no 5xx, no dropped connection, and the node answers /health afterwards.
-- A failure prints its seed: AITBC_FUZZ_SEED=N build/aitbc test tests/fuzz_spec.lua
-- replays it (AITBC_FUZZ_COUNT sets how many; bench/fuzz.lua runs bigger ones).
local cli = require "support.cli"
local fuzz = require "support.fuzz"
local nodes = require "support.node"

describe("fuzzing the node", function()
  local node
  setup(function() node = nodes.start() end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  it("answers every mutated request without a 5xx and stays alive", function()
    local seed = fuzz.seed()
    local count = math.tointeger(tonumber(os.getenv("AITBC_FUZZ_COUNT") or "3000"))
    local report = fuzz.run { url = node.url, admin_key = node.admin_key, seed = seed, count = count, budget_s = 40 }
    local replay = string.format("(replay: AITBC_FUZZ_SEED=%d build/aitbc test tests/fuzz_spec.lua)", seed)
    assert(#report.failures == 0, string.format("fuzz seed %d: %d of %d requests failed %s:\n%s", seed,
      #report.failures, report.sent, replay, table.concat(report.failures, "\n", 1, math.min(20, #report.failures))))
    assert(report.alive, string.format("fuzz seed %d: the node stopped answering /health %s", seed, replay))
    -- the run reached every route, and most requests got past the door
    local reached = 0
    for _ in pairs(report.routes) do reached = reached + 1 end
    assert.is_true(report.sent >= math.min(count, 500), "sent only " .. report.sent)
    assert.is_true(reached == report.route_count or report.sent < count, "reached " .. reached .. " routes")
  end)
end)
