--- The agent job: an agent's workflow on its input.  It is not submitted
-- directly: POST /v1/agents/{id}/execute checks the input against the
-- agent's definition (node/agents.lua) and sets its needs and run timeout
-- (the definition's limits.seconds + 60); a miner runs it beside Ollama
-- (mining/worker.lua, agents/runner.lua), every step posted as an event.
return { name = "agent", run_timeout = 660, direct = false }
