--- Spec §2: a miner registers, takes a job, and mines with Ollama (2.1–2.3),
-- with the spec's command lines as written after `aitbc devnet up` (its
-- simulated Ollama stands in when no real one answers).
local s = require("aitbc.scenario").new("2. Miner operations journey")

s:step("2.1", "Register as a miner", function(t)
  local r = t:run([[aitbc miner register --gpus "1x RTX 4090" --price-per-hour 0.5]])
  t:expect_exit(r, 0)
  t.vars.miner_id = t:expect_match(r.stdout, "registered miner (%S+)", "the assigned miner_id")
  t:expect_match(r.stdout, "gpus%s+1x RTX 4090 %(24 GB%)", "the registered GPU")
  t:expect_match(r.stdout, "price%s+0%.5 AITBC/hour", "the price")
  t:expect_match(r.stdout, "models%s+llama3", "the models from Ollama")
end)

s:step("2.2", "Poll for a job", function(t)
  -- whatever is queued on this node goes to this miner until the queue is empty
  t.vars.taken = {}
  t:wait_for("an empty queue", function()
    local r = t:run("aitbc miner poll")
    t:expect_exit(r, 0)
    if r.stdout:find("no jobs in queue") then return true end
    t:expect_match(r.stdout, "assigned to this miner %(now processing%)", "a job, marked processing")
    return false
  end, 30)
  local submitted = t:json(t:run([[aitbc --output json client submit --type inference --model llama3 ]]
    .. [[--data '{"prompt":"Summarize the AITBC network"}']]))
  local r = t:run("aitbc miner poll")
  t:expect_exit(r, 0)
  if r.stdout:find("no jobs in queue") then
    -- another miner on this network was quicker: the job must be in its hands
    local st = t:json(t:expect_exit(t:run("aitbc --output json client status " .. submitted.job_id), 0))
    t:expect((st.state == "RUNNING" or st.state == "COMPLETED") and type(st.assigned_miner_id) == "string"
      and st.assigned_miner_id ~= t.vars.miner_id,
      "the job was taken by another miner (state " .. tostring(st.state) .. ", miner " .. tostring(st.assigned_miner_id) .. ")")
    t:log("another miner (" .. st.assigned_miner_id .. ") took the job first")
  else
    t:expect_match(r.stdout, "job " .. submitted.job_id .. " assigned to this miner %(now processing%)", "marked processing")
    t:expect_match(r.stdout, "type%s+inference", "the job type")
    t:expect_match(r.stdout, "prompt%s+Summarize the AITBC network", "the payload")
    local st = t:run("aitbc client status " .. submitted.job_id).stdout
    t:expect_match(st, "assigned miner%s+" .. t.vars.miner_id:gsub("%p", "%%%0"), "the node shows this miner")
    t.vars.in_hand = submitted.job_id
  end
end)

s:step("2.3", "Mine with local Ollama (automated)", function(t)
  local log = t.home .. "/mine-ollama.log"
  local pid, proc = t:spawn("aitbc miner mine-ollama --model llama3 --continuous", { log = log })
  local function stream() return require("aitbc.sys").read_file(log) or "" end
  if not t.vars.in_hand then
    t:json(t:run([[aitbc --output json client submit --type inference --model llama3 --data '{"prompt":"Hello miner"}']]))
  end
  t:wait_for("a job to go through this miner", function()
    if not stream():find("result submitted") then
      t:run([[aitbc client submit --type inference --model llama3 --data '{"prompt":"Hello miner"}']])
      return false
    end
    return true
  end, 60)
  local text = stream()
  t:expect_match(text, "polling for jobs", "polling")
  local order = { "job %x+ received", "running inference on llama3", "inference done: %d+ tokens",
    "result submitted; receipt %x+" }
  local at = 1
  for _, step in ipairs(order) do
    local s2, e = text:find(step, at)
    t:expect(s2, "log line in order: " .. step .. "\n" .. text)
    at = e
  end
  if t.vars.in_hand then t:expect_match(text, t.vars.in_hand .. " received", "the job in hand ran first") end
  t:expect(require("aitbc.sys").kill(pid, 2), "Ctrl-C")
  local code = proc:communicate(nil, 20)
  t:expect(code == 130, "stopped cleanly on Ctrl-C, exit 130 (exit " .. tostring(code) .. ")")
  t:expect_match(stream(), "stopping", "says it stops")
end)

return s
