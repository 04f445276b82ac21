--- Spec §1: a client's job from submission to result (1.1–1.3), with the
-- spec's command lines as written after `aitbc devnet up`.  Miners (on the
-- simulated Ollama when no real one answers) do the work.
local s = require("aitbc.scenario").new("1. Client job submission journey")

s:step("1.1", "Submit a job", function(t)
  local r = t:run([[aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "job submitted", "a success message")
  t.vars.job_id = t:expect_match(r.stdout, "job_id%s+(%x+)", "the job_id")
  t:expect_match(r.stdout, "status%s+pending", "the initial status (pending)")
  local j = t:json(t:run(
    [[aitbc --output json client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']]))
  t:expect(j.job_id and j.state == "QUEUED", "--output json gives the job's fields")
  t:expect_exit(t:run("aitbc client cancel " .. j.job_id), 0)
end)

s:step("1.2", "Check job status", function(t)
  local r = t:run("aitbc client status " .. t.vars.job_id)
  t:expect_exit(r, 0)
  local status = t:expect_match(r.stdout, "status%s+(%a+)", "the status")
  if status == "queued" then
    t:expect_match(r.stdout, "status%s+queued %(pending: waiting for a miner%)", "queued: no miner has it yet")
    t:expect_match(r.stdout, "assigned miner%s+%-\n", "no assigned miner yet")
  else
    -- a network with miners (make demo's devnet) may have taken it at once
    t:expect(status == "processing" or status == "completed", "queued, processing or completed (got " .. status .. ")")
    t:expect_match(r.stdout, "assigned miner%s+[^%s%-]%S*", "the assigned miner")
    t:log("a miner of this network took the job at once")
  end
  t:expect_match(r.stdout, "time queued%s+[%d.]+ s", "timing")
  -- a miner takes the job (the devnet's, or this one, spec 2.3's line): the status shows it
  t:spawn("aitbc miner mine-ollama --model llama3 --continuous", { log = t.home .. "/miner.log" })
  local done = t:wait_for("the job to complete", function()
    local out = t:run("aitbc client status " .. t.vars.job_id).stdout
    return out:find("status%s+completed") and out
  end, 60)
  t:expect_match(done, "assigned miner%s+%S+", "the miner that ran it")
  t:expect_match(done, "time running%s+[%d.]+ s", "how long it ran")
end)

s:step("1.3", "Retrieve job result", function(t)
  local r = t:run("aitbc client result " .. t.vars.job_id)
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "^[^\n]*%w", "the generated text")
  t:expect_match(r.stdout, "model%s+llama3", "the model")
  t:expect_match(r.stdout, "tokens%s+%d+ generated", "token counts")
  t:expect_match(r.stdout, "proof of execution%s+%x+ %(signature verified against the node's key%)", "a verified receipt")
  local j = t:json(t:run("aitbc --output json client result " .. t.vars.job_id))
  t:expect(j.receipt_verified == true and j.receipt.signature.alg == "Ed25519", "the signed receipt in JSON")
end)

return s
