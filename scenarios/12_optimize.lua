--- Spec §12: autonomous optimisation (12.1–12.2), with the spec's command
-- lines as written after `aitbc devnet up`.  12.1 tunes a real agent with
-- real jobs on the devnet's miner (its Ollama is the simulated one, whose
-- timings follow a model of its hardware: a num_ctx too large for its
-- VRAM spills to the CPU).  12.2 forecasts from the node's own jobs; a
-- fresh devnet has minutes of history, so the user first imports a
-- generated three-day workload, as the README shows.
local s = require("aitbc.scenario").new("12. Autonomous optimization")

s:step("12.1", "Enable self-optimization", function(t)
  t:expect_exit(t:run([[cat > assistant.json <<'JSON'
{
  "model": "llama3",
  "system_prompt": "You are a concise assistant for AITBC operators. Answer in one sentence. Prefer numbers to words.",
  "parameters": {"num_ctx": 16384, "temperature": 0.2}
}
JSON]]), 0)
  local r = t:run([[aitbc agent create --name "ops_assistant" --type "chat" --config assistant.json]])
  t:expect_exit(r, 0)
  local agent_id = t:expect_match(r.stdout, "registered and ready: (agent_%x+)", "the agent's id")
  for _, q in ipairs { "What is 17 * 23?", "Summarise the miner queue in one line", "What is 120 + 45?" } do
    t:expect_exit(t:run("aitbc agent execute " .. agent_id .. ' --input "' .. q .. '"'), 0)
  end
  r = t:run("aitbc optimize self-opt --agent-id " .. agent_id .. [[ --target "inference-speed"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "Optimization started", "optimization started")
  t:expect_match(r.stdout, "the agent's 3 most recent input%(s%), 3 run%(s%) each", "the probe set: its recent inputs")
  t:expect_match(r.stdout, "baseline%s+median [%d%.]+ ms %(IQR", "the baseline's median and spread")
  t:expect_match(r.stdout, "improvement%s+[%d%.]+ %% faster %(median [%d%.]+ → [%d%.]+ ms%)", "the measured improvement")
  t:expect_match(r.stdout, "num_ctx%s+16384%s+%d+", "the parameter changed, before and after")
  t:expect_match(r.stdout, "What was tried", "what was tried")
  t:expect_match(r.stdout, "saved as version 2 of agent", "saved as a new version")
  r = t:run("aitbc agent show " .. agent_id .. " -o json")
  t:expect(t:json(r).definition.parameters.num_ctx ~= 16384, "the new version holds the tuned parameters")
  t:expect_exit(t:run("aitbc agent rollback " .. agent_id .. " 1"), 0)
  r = t:run("aitbc agent show " .. agent_id .. " -o json")
  t:expect(t:json(r).definition.parameters.num_ctx == 16384, "agent rollback undoes it")
end)

s:step("12.2", "Predictive scaling", function(t)
  local r = t:run([[aitbc optimize predict --target "network-load" --horizon "24h"]])
  t:expect_exit(r, 1)
  t:expect_match(r.stdout .. r.stderr, "not enough history to forecast: .- at least 12 %(3 h%)",
    "with minutes of history: how much is needed")
  t:expect_exit(t:run("aitbc optimize import-history --generate 3"), 0)
  r = t:run([[aitbc optimize predict --target "network-load" --horizon "24h"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "Forecast of network%-load %(jobs per interval%) for the next 1 d", "a forecast")
  t:expect_match(r.stdout, "Holt%-Winters, additive daily seasonality", "the model, with daily seasonality")
  t:expect_match(r.stdout, "back%-test%s+last 1 d held out: MAE [%d%.]+ jobs, RMSE [%d%.]+, MASE [%d%.]+",
    "a back-test error")
  t:expect_match(r.stdout, "FORECAST%s+80 %%%s+95 %%%s+MINERS NEEDED", "the time series with its intervals")
  t:expect_match(r.stdout, "scale up to %d+ miner%(s%) by", "when to scale up")
  t:expect_match(r.stdout, "scale down to %d+ miner%(s%) from", "when to scale down")
  local doc = t:json(t:run([[aitbc -o json optimize predict --target "network-load" --horizon "24h"]]))
  t:expect(#doc.forecast == 96 and doc.forecast[1].hi95 >= doc.forecast[1].hi80, "96 intervals with 80/95 % bounds")
end)

return s
