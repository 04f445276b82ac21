--- Spec §5: AI agents (5.1–5.2), with the spec's command lines as written
-- after `aitbc devnet up`.  The agent's tool calls and answer come from the
-- devnet's model and from tools that ran on its miner.
local s = require("aitbc.scenario").new("5. AI agent execution")

s:step("5.1", "Create agent workflow", function(t)
  -- the user writes the agent's configuration and the data it analyses
  t:expect_exit(t:run([[cat > q3.csv <<'CSV'
region,revenue,costs
eu,120,80
us,200,150
asia,95,40
CSV
cat > agent_config.json <<'JSON'
{
  "model": "llama3",
  "system_prompt": "You are a financial analyst. Use the tools; never guess a number.",
  "tools": ["csv_query", "calculator"],
  "data": {"q3": "file:q3.csv"},
  "limits": {"steps": 8, "tokens": 8000, "seconds": 120},
  "parameters": {"temperature": 0.1}
}
JSON]]), 0)
  local r = t:run([[aitbc agent create --name "data_analyzer" --type "analysis" --config agent_config.json]])
  t:expect_exit(r, 0)
  t.vars.agent_id = t:expect_match(r.stdout, "agent data_analyzer registered and ready: (agent_%x+)",
    "a success message with the agent_id")
  t:expect_match(r.stdout, "tools%s+csv_query, calculator", "its tools")
  t:expect_match(r.stdout, "data%s+q3", "its data")
end)

s:step("5.2", "Execute agent", function(t)
  local r = t:run("aitbc agent execute " .. t.vars.agent_id .. [[ --input "Analyze Q3 financial data"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "Step 1", "its steps, streamed")
  t:expect_match(r.stdout, "→ csv_query {", "an action: a tool call with its arguments")
  t:expect_match(r.stdout, "← csv_query: ", "the observation: what the tool returned")
  t:expect_match(r.stdout, "Answer\n[^\n]+", "the final result")
  t:expect_match(r.stdout, "proof of execution%s+%x+ %(signature verified against the node's key%)", "the job's signed receipt")
  local doc = t:json(t:run("aitbc -o json agent execute " .. t.vars.agent_id .. [[ --input "Analyze Q3 financial data"]]))
  local tools = 0
  for _, e in ipairs(doc.events or {}) do if e.type == "tool_output" then tools = tools + 1 end end
  t:expect(tools >= 1 and doc.answer and doc.receipt_verified, "JSON: the steps, the answer and a verified receipt")
end)

return s
