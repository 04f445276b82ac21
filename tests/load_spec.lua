-- Concurrency and crash safety of the node, with real processes.
local cli = require "support.cli"
local http = require "aitbc.http"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

local function submit_many(node, key, n)
  local ids, batch = {}, {}
  local function flush()
    for _, res in ipairs(http.request_many(batch)) do
      assert(res.status == 201, res.error or res.body)
      ids[#ids + 1] = json.decode(res.body).job_id
    end
    batch = {}
  end
  for i = 1, n do
    batch[#batch + 1] = { method = "POST", url = node.url .. "/v1/jobs", headers = { ["X-Api-Key"] = key },
      body = json.encode { payload = { prompt = "job " .. i } } }
    if #batch == 50 then flush() end
  end
  flush()
  return ids
end

describe("under load", function()
  after_each(cli.cleanup)

  it("16 concurrent miners complete 1,000 jobs, each exactly once", function()
    local node = nodes.start { args = { "--log-level", "warn" } }
    local client = node:key("client")
    local ids = submit_many(node, client, 1000)
    local miners = {}
    for i = 1, 16 do
      local key = node:key("miner")
      miners[i] = assert(cli.spawn { argv = { cli.bin, "run", "tests/support/miner_loop.lua", node.url, key,
        "racer-" .. i, "1" }, stdout = "pipe", stderr = "pipe" })
    end
    local seen, total = {}, 0
    for i, p in ipairs(miners) do
      local code, out, err = p:communicate(nil, 120)
      assert.equal(0, code, "miner " .. i .. ": " .. tostring(err))
      for id in out:gmatch("%x+") do
        assert.is_nil(seen[id], "job " .. id .. " completed twice")
        seen[id] = i
        total = total + 1
      end
    end
    assert.equal(1000, total)
    for _, id in ipairs(ids) do assert.is_number(seen[id], "job " .. id .. " never completed") end
    local _, stats = node:request("GET", "/v1/admin/stats", { key = node.admin_key })
    assert.equal(1000, stats.jobs_by_state.COMPLETED)
    node:stop()
  end)

  it("keeps every acknowledged job through kill -9 during a submit load", function()
    local dir = cli.tempdir()
    local node = nodes.start { data_dir = dir }
    local client = node:key("client")
    -- the submitter prints each job id only after the node acknowledged it (201)
    local script = dir .. "/submitter.lua"
    assert(sys.write_file(script, string.format([[
      local http = require "aitbc.http"
      local json = require "aitbc.json"
      for _ = 1, 100000 do
        local res = http.request { method = "POST", url = %q, headers = { ["X-Api-Key"] = %q },
          body = '{"payload":{"prompt":"crash test"}}', timeout = 5 }
        if not res or res.status ~= 201 then break end
        io.write(json.decode(res.body).job_id, "\n") io.flush()
      end
    ]], node.url .. "/v1/jobs", client)))
    local submitter = assert(cli.spawn { argv = { cli.bin, "run", script }, stdout = "pipe", stderr = "null" })
    local out = ""
    local until_kill = sys.monotonic() + 1
    while sys.monotonic() < until_kill do
      local chunk = submitter:read(0.1)
      if chunk then out = out .. chunk end
    end
    node:stop(true) -- kill -9 while the submitter is still sending
    local _, rest = submitter:communicate(nil, 10)
    out = out .. (rest or "")
    local acknowledged = {}
    for id in out:gmatch("%x+") do acknowledged[#acknowledged + 1] = id end
    assert.is_true(#acknowledged > 10, "the submitter got " .. #acknowledged .. " acknowledgements")
    local again = nodes.start { data_dir = dir }
    for _, id in ipairs(acknowledged) do
      local status = again:request("GET", "/v1/jobs/" .. id, { key = client })
      assert.equal(200, status, "acknowledged job " .. id .. " lost")
    end
    again:stop()
  end)
end)
