--- aitbc multimodal: images and text together through an agent's vision
-- model (spec §11.1), and a benchmark per input type (§11.2).
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function api(ctx) return require("aitbc.api").from_context(ctx, { role = "client" }) end

local AGENT = { agent_id = "string", definition = "object" }

local function fmt_ms(v) return v and string.format("%.0f ms", v) or "-" end

local function render_benchmark(d, out)
  out:print(string.format("Benchmark of agent %s (seed %d)", d.agent_id, d.seed))
  local rows = {}
  for _, modality in ipairs { "text", "vision", "audio" } do
    local m = d.modalities[modality]
    if not m.supported then
      rows[#rows + 1] = { input = modality, tasks = "-", accuracy = "unsupported", ["latency p50/p95"] = "-",
        ["tokens/s"] = "-", ["ttft p50"] = "-", note = m.reason }
    else
      rows[#rows + 1] = { input = modality, tasks = tostring(m.tasks),
        accuracy = m.accuracy and string.format("%.0f%% (%d/%d)", m.accuracy * 100, m.correct, m.tasks - m.failed)
          or "-",
        ["latency p50/p95"] = fmt_ms(m.latency_ms.p50) .. " / " .. fmt_ms(m.latency_ms.p95),
        ["tokens/s"] = m.tokens_per_second and string.format("%.1f", m.tokens_per_second) or "-",
        ["ttft p50"] = fmt_ms(m.ttft_ms.p50), note = m.failed > 0 and (m.failed .. " failed") or "" }
    end
  end
  out:print(out:format_table(rows, { "input", "tasks", "accuracy", "latency p50/p95", "tokens/s", "ttft p50", "note" }))
  if d.simulated then
    out:print(out:style("the miners' Ollama is aitbc's simulated one: accuracy reflects the simulator, not a model",
      "yellow"))
  end
end

return {
  name = "multimodal",
  category = "Workflows",
  summary = "Images and text through an agent's vision model; benchmarks per input type",
  commands = {
    {
      name = "process",
      summary = "Analyze an image (and text) with an agent's vision model",
      id_field = "job_id", fields = { "job_id", "agent_id", "images", "text", "answer", "usage", "receipt",
        "receipt_verified" },
      options = {
        { "--agent-id", metavar = "AGENT", help = "the agent (it needs a vision model, models.vision)" },
        { "--image", metavar = "FILE", repeatable = true,
          help = "a PNG, JPEG, WebP or GIF image (up to 4 MiB; repeat for more)" },
        { "--text", metavar = "TEXT", help = "what to do with it, e.g. \"Analyze this chart\"" },
        { "--timeout", type = "number", min = 1, default = 600, metavar = "SECONDS", help = "how long to follow it" },
      },
      examples = { [[aitbc multimodal process --agent-id agent_0a1b2c3d4e5f6a7b --image image.jpg --text "Analyze this chart"]] },
      run = function(ctx)
        local o = ctx.opts
        if not o.agent_id then errors.raise("usage", "--agent-id is required") end
        if not o.image or #o.image == 0 then errors.raise("usage", "--image is required: an image file") end
        if #o.image > 4 then errors.raise("usage", "at most 4 --image at once") end
        local images = require "aitbc.agents.images"
        local list = {}
        for i, file in ipairs(o.image) do
          local bytes = require("aitbc.config").read_input(file, "--image")
          local img, why = images.from_bytes(bytes)
          if not img then errors.raise("usage", file .. " is " .. why, "give a PNG, JPEG, WebP or GIF up to 4 MiB") end
          list[i] = img
        end
        if ctx.out.format == "table" then
          for i, img in ipairs(list) do
            ctx.out:info(string.format("%s: %s, %dx%d, %d bytes", o.image[i], img.format:upper(), img.width, img.height,
              img.bytes))
          end
        end
        local wire = {}
        for i, img in ipairs(list) do wire[i] = { data = img.data } end
        local client = api(ctx)
        local path = require("aitbc.api").path("/v1/agents/{agent_id}/execute", { agent_id = o.agent_id })
        local job = client:call("POST", path, { json = { input = o.text or "Describe this image.", images = wire },
          expect = { job_id = "string", state = "string" } })
        if ctx.out.format == "table" then ctx.out:success("submitted: job " .. job.job_id .. " (" .. job.type .. ")") end
        local follow = require "aitbc.jobs.follow"
        local state = follow.events(client, job.job_id, { timeout = o.timeout })
        if state ~= "COMPLETED" then
          local j = client:call("GET", require("aitbc.api").path("/v1/jobs/{job_id}", { job_id = job.job_id }))
          errors.raise("failure", "job " .. job.job_id .. " ended " .. state .. ": " .. tostring(j.error))
        end
        local res = follow.result(client, job.job_id)
        local r = type(res.result) == "table" and res.result or { answer = res.result }
        local images_info = json.array()
        for i, img in ipairs(list) do
          images_info[i] = { file = o.image[i], format = img.format, width = img.width, height = img.height,
            bytes = img.bytes, sha256 = img.sha256 }
        end
        return { job_id = job.job_id, agent_id = o.agent_id, images = images_info, text = o.text, answer = r.answer,
          usage = r.usage, receipt = res.receipt, receipt_verified = res.receipt_verified or false }, function(d, out)
          out:print("")
          out:print(out:style("Analysis", "bold"))
          out:print(d.answer or "")
          out:print("")
          out:print(out:format_record({ job = d.job_id, receipt = d.receipt and (d.receipt.receipt_id
            .. (d.receipt_verified and " (signature verified against the node's key)" or "")) },
            { "job", { "receipt", "proof of execution" } }))
        end
      end,
    },
    {
      name = "benchmark",
      summary = "Accuracy, latency, tokens/s and time to first token per input type (text, vision, audio)",
      fields = { "agent_id", "seed", "models", "modalities", "simulated" },
      options = {
        { "--agent-id", metavar = "AGENT", help = "the agent to measure" },
        { "--tasks", type = "integer", min = 1, max = 100, default = 6, metavar = "N", help = "tasks per input type" },
        { "--seed", type = "integer", min = 0, default = 1, metavar = "N", help = "which generated suite" },
      },
      examples = { "aitbc multimodal benchmark --agent-id agent_0a1b2c3d4e5f6a7b" },
      run = function(ctx)
        local o = ctx.opts
        if not o.agent_id then errors.raise("usage", "--agent-id is required") end
        local client = api(ctx)
        local agent = client:call("GET", require("aitbc.api").path("/v1/agents/{agent_id}", { agent_id = o.agent_id }),
          { expect = AGENT })
        local report = require("aitbc.agents.benchmark").run { client = client, agent = agent, seed = o.seed,
          tasks = o.tasks, on_task = function(modality, i, n, run)
            if ctx.out.format == "table" then
              ctx.out:info(string.format("%s %d/%d: %s", modality, i, n, run.error and ("failed: " .. run.error)
                or string.format("%s (expected %s, got %s)", run.correct and "correct" or "wrong",
                  tostring(run.expected), tostring(run.got))))
            end
          end }
        return report, render_benchmark
      end,
    },
  },
}
