--- The multimodal benchmark (spec 11.2): a suite generated from a seed,
-- with known answers, run as ordinary jobs on the network, graded, and
-- summarised per input type (text, vision, audio): tasks, accuracy, latency
-- p50/p95, tokens/s and time to first token.  A modality the agent's models
-- lack is reported as unsupported, never as zero or as a pass.
--   text:   arithmetic, and a number pulled out of a sentence
--   vision: images the suite draws (PNG): how many circles, the tallest
--           bar's height, the colour of a square
--   audio:  Ollama takes no audio input: unsupported
local json = require "aitbc.json"
local png = require "aitbc.agents.png"
local sys = require "aitbc.sys"

local M = {}

local COLORS = { red = { 220, 30, 30 }, green = { 30, 160, 60 }, blue = { 30, 60, 220 }, yellow = { 230, 200, 20 } }
local COLOR_NAMES = { "red", "green", "blue", "yellow" }
local WHITE = { 255, 255, 255 }

--- A small deterministic generator (xorshift64*), so a seed gives a suite.
local function generator(seed)
  local state = (seed * 2654435761 + 1) & 0x7FFFFFFFFFFFFFFF
  if state == 0 then state = 88172645463325252 end
  return function(lo, hi)
    state = state ~ (state << 13)
    state = state ~ (state >> 7)
    state = state ~ (state << 17)
    return lo + (state & 0x7FFFFFFF) % (hi - lo + 1)
  end
end

local function text_tasks(rand, n)
  local tasks = {}
  for i = 1, n do
    if i % 2 == 1 then
      local a, b, c = rand(12, 99), rand(3, 40), rand(1, 500)
      tasks[#tasks + 1] = { modality = "text", kind = "number", answer = a * b + c,
        prompt = string.format("What is %d * %d + %d? Answer with the number only.", a, b, c) }
    else
      local invoice, total, day = rand(1000, 9999), rand(1000, 99999) / 100, rand(1, 28)
      tasks[#tasks + 1] = { modality = "text", kind = "number", answer = total,
        prompt = string.format("Invoice %d from AITBC Labs, due 2026-12-%02d, total %.2f EUR. What is the total "
          .. "amount? Answer with the number only.", invoice, day, total) }
    end
  end
  return tasks
end

local function circles_image(rand)
  local c = png.canvas(96, 64, WHITE)
  local count = rand(1, 5)
  for k = 0, count - 1 do
    c:circle(10 + k * 18, rand(12, 52), 7, COLORS[COLOR_NAMES[rand(1, 4)]])
  end
  return c:png(), count
end

local function bars_image(rand)
  local c = png.canvas(96, 64, WHITE)
  local tallest = 0
  for k = 0, 3 do
    local h = rand(8, 56)
    tallest = math.max(tallest, h)
    c:rect(8 + k * 22, 64 - h, 14, h, COLORS.blue)
  end
  return c:png(), tallest
end

local function square_image(rand)
  local c = png.canvas(64, 64, WHITE)
  local name = COLOR_NAMES[rand(1, 4)]
  c:rect(16, 16, 32, 32, COLORS[name])
  return c:png(), name
end

local function vision_tasks(rand, n)
  local tasks = {}
  for i = 1, n do
    local which = i % 3
    if which == 1 then
      local image, count = circles_image(rand)
      tasks[#tasks + 1] = { modality = "vision", kind = "number", answer = count, image = image,
        prompt = "How many circles are in this image? Answer with a number only." }
    elseif which == 2 then
      local image, h = bars_image(rand)
      tasks[#tasks + 1] = { modality = "vision", kind = "number", answer = h, image = image,
        prompt = "This is a bar chart drawn on a 64-pixel-high image. How many pixels high is the tallest bar? "
          .. "Answer with a number only." }
    else
      local image, name = square_image(rand)
      tasks[#tasks + 1] = { modality = "vision", kind = "word", answer = name, image = image,
        prompt = "What colour is the square in this image? Answer with one word." }
    end
  end
  return tasks
end

--- The suite for a seed: per_modality tasks of each supported input type.
function M.suite(seed, per_modality)
  local rand = generator(seed)
  return { text = text_tasks(rand, per_modality), vision = vision_tasks(rand, per_modality), audio = {} }
end

--- Relaxed accuracy (ChartQA): a number within 5 % of the answer; a word
-- the answer contains, whole, in any case.
function M.grade(task, text)
  text = tostring(text or "")
  if task.kind == "number" then
    local got = tonumber((text:gsub(",", "")):match("%-?%d+%.?%d*"))
    if not got then return false, nil end
    local want = task.answer
    return math.abs(got - want) <= math.max(0.05 * math.abs(want), 1e-9), got
  end
  local found = text:lower():find("%f[%a]" .. task.answer .. "%f[%A]") ~= nil
  return found, found and task.answer or text:match("%a+")
end

local function percentile(sorted, p)
  if #sorted == 0 then return nil end
  local rank = math.max(1, math.ceil(p / 100 * #sorted))
  return sorted[math.min(rank, #sorted)]
end

--- Summary of a modality's runs: {tasks, correct, accuracy, latency_ms {p50, p95},
-- tokens_per_second, ttft_ms {p50, p95}, failed}.
function M.summarise(runs)
  local latency, ttft, correct, failed, tokens, eval_s = {}, {}, 0, 0, 0, 0
  for _, r in ipairs(runs) do
    if r.error then
      failed = failed + 1
    else
      if r.correct then correct = correct + 1 end
      latency[#latency + 1] = r.latency_ms
      if r.ttft_ms then ttft[#ttft + 1] = r.ttft_ms end
      tokens, eval_s = tokens + (r.eval_count or 0), eval_s + (r.eval_seconds or 0)
    end
  end
  table.sort(latency)
  table.sort(ttft)
  local scored = #runs - failed
  return { tasks = #runs, correct = correct, failed = failed,
    accuracy = scored > 0 and correct / scored or nil,
    latency_ms = { p50 = percentile(latency, 50), p95 = percentile(latency, 95) },
    ttft_ms = { p50 = percentile(ttft, 50), p95 = percentile(ttft, 95) },
    tokens_per_second = eval_s > 0 and tokens / eval_s or nil }
end

local iso_seconds = require("aitbc.timefmt").parse
M.iso_seconds = iso_seconds

--- Timings of a finished job: time to first token from Ollama's own
-- figures (load and prompt evaluation) when the miner reported them, else
-- from the events (running -> first token, as the node stamped them);
-- tokens and generation time from the metrics.
local function timings(events, metrics)
  metrics = type(metrics) == "table" and metrics or {}
  local ttft
  if metrics.prompt_eval_duration then
    ttft = ((metrics.load_duration or 0) + metrics.prompt_eval_duration) / 1e6
  else
    local running, first_token
    for _, e in ipairs(events) do
      if e.type == "job.running" and not running then running = iso_seconds(e.time) end
      if e.type == "token" and not first_token then first_token = iso_seconds(e.time) end
    end
    if running and first_token then ttft = (first_token - running) * 1000 end
  end
  local seconds = metrics.eval_duration and metrics.eval_duration / 1e9
  return ttft, metrics.eval_count, seconds
end

--- Runs one task as a job and grades it.  submit(task) -> job id.
local function run_task(client, follow, task, submit)
  local started = sys.monotonic()
  local ok, job_id = pcall(submit, task)
  if not ok then return { error = type(job_id) == "table" and job_id.message or tostring(job_id) } end
  local fok, state, events = pcall(follow.events, client, job_id, { timeout = 300 })
  if not fok then return { job_id = job_id, error = type(state) == "table" and state.message or tostring(state) } end
  if state ~= "COMPLETED" then return { job_id = job_id, error = "the job ended " .. state } end
  local res = follow.result(client, job_id)
  local latency = (sys.monotonic() - started) * 1000
  local r = res.result
  local text = type(r) == "table" and (r.answer or r.response or r.text) or r
  local correct, got = M.grade(task, text)
  local ttft, eval_count, eval_seconds = timings(events, res.metrics)
  return { job_id = job_id, correct = correct, got = got, expected = task.answer, latency_ms = latency,
    ttft_ms = ttft, eval_count = eval_count, eval_seconds = eval_seconds,
    simulated = type(res.metrics) == "table" and res.metrics.simulated or nil }
end

--- Runs the suite against an agent.  opts: {client, agent (its view),
-- seed, tasks, on_task = function(modality, i, n, run)}.  -> report
function M.run(opts)
  local client, agent = opts.client, opts.agent
  local follow = require "aitbc.jobs.follow"
  local images = require "aitbc.agents.images"
  local api = require "aitbc.api"
  local def = agent.definition
  local suite = M.suite(opts.seed, opts.tasks)
  local report = { agent_id = agent.agent_id, seed = opts.seed, models = def.models, modalities = {} }
  local submitters = {
    text = function(task)
      return client:call("POST", "/v1/jobs", { json = { model = def.models.text,
        payload = { prompt = task.prompt, options = def.parameters } }, expect = { job_id = "string" } }).job_id
    end,
    vision = function(task)
      local img = assert(images.from_bytes(task.image))
      return client:call("POST", api.path("/v1/agents/{agent_id}/execute", { agent_id = agent.agent_id }),
        { json = { input = task.prompt, images = { { data = img.data } } }, expect = { job_id = "string" } }).job_id
    end,
  }
  local unsupported = {
    vision = not def.models.vision and "the agent has no vision model (set models.vision, e.g. llava)" or nil,
    audio = "Ollama takes no audio input, and none of the agent's models declares audio",
  }
  for _, modality in ipairs { "text", "vision", "audio" } do
    if unsupported[modality] then
      report.modalities[modality] = { supported = false, reason = unsupported[modality] }
    else
      local runs = {}
      for i, task in ipairs(suite[modality]) do
        runs[i] = run_task(client, follow, task, submitters[modality])
        if runs[i].simulated then report.simulated = true end
        if opts.on_task then opts.on_task(modality, i, #suite[modality], runs[i]) end
      end
      local summary = M.summarise(runs)
      summary.supported, summary.runs = true, json.array(runs)
      report.modalities[modality] = summary
    end
  end
  return report
end

return M
