--- Spec §10: cross-chain agent communication (10.1–10.3), typed as written
-- on `aitbc devnet up --nodes 2`: node 1 hosts ait-devnet, node 2
-- ait-healthchain, each following the other's chain.  Registrations are
-- signed with the agents' own keys, the healthchain agent is found on the
-- node that hosts that chain, and the message comes back with a delivery
-- receipt signed by that node and checked by the CLI.
local s = require("aitbc.scenario").new("10. Cross-chain agent communication", { nodes = 2 })

s:step("10.1", "Register agent in network", function(t)
  local r = t:expect_exit(t:run([[aitbc -q agent create --name "data_analyzer" --type "analysis" --model llama3]]), 0)
  t.vars.agent_id = t:expect_match(r.stdout, "(agent_%x+)", "the new agent's id")
  r = t:run("aitbc agent-comm register --agent-id " .. t.vars.agent_id
    .. [[ --chain-id ait-devnet --capabilities "data-analysis"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "registered on ait%-devnet and discoverable", "a success message")
  t:expect_match(r.stdout, "hosted by node%s+http://127%.0%.0%.1:%d+", "the node whose directory lists it")
end)

s:step("10.2", "Discover agents", function(t)
  -- someone on the health chain offers medical analysis
  local r = t:expect_exit(t:run([[aitbc -q agent create --name "radiology" --type "analysis" --model llama3]]), 0)
  t.vars.target = t:expect_match(r.stdout, "(agent_%x+)", "the health agent's id")
  t:expect_exit(t:run("aitbc agent-comm register --agent-id " .. t.vars.target
    .. [[ --chain-id ait-healthchain --capabilities "medical-analysis"]]), 0)
  -- the first agent registered last speaks for the user again
  t:expect_exit(t:run("aitbc agent-comm register --agent-id " .. t.vars.agent_id
    .. [[ --chain-id ait-devnet --capabilities "data-analysis"]]), 0)
  r = t:run([[aitbc agent-comm discover --chain-id ait-healthchain --capability "medical-analysis"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, t.vars.target .. "%s+medical%-analysis%s+http://127%.0%.0%.1:%d+%s+%d%.%d%d",
    "the agent, its node's address and its reputation")
  local nodes = t:json(t:run("aitbc -o json devnet status"))
  local healthchain_url
  for _, p in ipairs(nodes.parts) do if p.part:find("ait-healthchain", 1, true) then healthchain_url = p.where end end
  t:expect_match(r.stdout, healthchain_url:gsub("%p", "%%%0"), "the address of the node that hosts ait-healthchain")
end)

s:step("10.3", "Send cross-chain message", function(t)
  local r = t:run("aitbc agent-comm send --target-agent " .. t.vars.target
    .. [[ --target-chain ait-healthchain --message "request_analysis"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "message msg_%x+ transmitted", "the transmission confirmation")
  t:expect_match(r.stdout, "delivered to " .. t.vars.target .. "'s inbox on ait%-healthchain", "the delivery")
  t:expect_match(r.stdout, "delivery receipt%s+signature verified against", "a verified delivery receipt")
end)

return s
