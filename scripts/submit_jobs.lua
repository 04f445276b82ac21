--- Submits one inference job per prompt through the client API the
-- `aitbc client` commands use, waits for each result (its receipt checked
-- against the node's key) and prints it; with --pay, pays each job as it is
-- submitted (from the active wallet; AITBC_WALLET_PASSWORD or a prompt).
--   aitbc run scripts/submit_jobs.lua [--model llama3] [--pay AITBC] [PROMPT...]
local aitbc = require "aitbc"

local model, pay, prompts = "llama3", nil, {}
local i = 1
while i <= #arg do
  if arg[i] == "--model" then model, i = arg[i + 1], i + 2
  elseif arg[i] == "--pay" then pay, i = arg[i + 1], i + 2
  else prompts[#prompts + 1], i = arg[i], i + 1 end
end
if #prompts == 0 then prompts = { "Hello AITBC" } end

local jobs = {}
for n, prompt in ipairs(prompts) do
  jobs[n] = aitbc.client.submit { model = model, prompt = prompt, pay = pay }
  io.stderr:write("submitted ", jobs[n].job_id, pay and (" (paid " .. pay .. " AITBC)") or "", "\n")
end
for _, job in ipairs(jobs) do
  local res = aitbc.client.result(job.job_id, { wait = true, timeout = 120 })
  local text = type(res.result) == "table" and res.result.response or aitbc.json.encode(res.result)
  print(string.format("%s  %s  receipt %s%s", job.job_id, text:gsub("%s+", " "):sub(1, 60),
    res.receipt and res.receipt.receipt_id or "-", res.receipt_verified and " (verified)" or ""))
end
return 0
