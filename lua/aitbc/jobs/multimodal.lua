--- The multimodal job: an agent's vision model on images and text.  Like
-- the agent job (jobs/agent.lua) it comes only from POST
-- /v1/agents/{id}/execute, with images; a miner with a vision model runs it.
return { name = "multimodal", run_timeout = 660, direct = false }
