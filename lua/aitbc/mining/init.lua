--- The miner's side: GPU description, registration, the miner's API
-- client.  The mine-ollama loop is aitbc.mining.worker.
local api = require "aitbc.api"
local json = require "aitbc.json"

local mining = {}

-- What the miner reads from the node's replies (aitbc.api check_reply specs).
local GPUS = { "array?", { name = "scalar", count = "integer?", memory_gb = "number?" } }
mining.MINER = { miner_id = "id", status = "string?", price_per_hour = "scalar?",
  capabilities = { "object?", { gpus = GPUS, models = { "array?", "scalar" } } } }
mining.JOB = { job_id = "id", payload = "any", model = "string?" }

--- GPU memory of well-known models, in GB (when --gpus names no size).
local KNOWN_VRAM = {
  ["rtx 4090"] = 24, ["rtx 4080"] = 16, ["rtx 4070"] = 12, ["rtx 3090"] = 24, ["rtx 3080"] = 10,
  ["a100"] = 80, ["h100"] = 80, ["h200"] = 141, ["l40s"] = 48, ["l4"] = 24, ["a10"] = 24, ["t4"] = 16,
  ["rtx a6000"] = 48, ["v100"] = 32,
}

--- "1x RTX 4090", "2x A100 80GB, 1x L4" -> {{name, count, memory_gb}} | nil, err
function mining.parse_gpus(text)
  local gpus = {}
  for part in text:gmatch("[^,;]+") do
    part = part:match("^%s*(.-)%s*$")
    local count, rest = part:match("^(%d+)%s*[xX×]%s*(.+)$")
    count, rest = tonumber(count) or 1, rest or part
    local size = tonumber(rest:match("(%d+)%s*[Gg][Bb]$"))
    local name = rest:gsub("%s*%d+%s*[Gg][Bb]$", "")
    if name == "" or count < 1 or count > 1024 then
      return nil, "cannot read '" .. part .. "': write it as COUNTx MODEL [MEMORY GB], e.g. 1x RTX 4090 or 2x A100 80GB"
    end
    if not size then
      local key = name:lower():gsub("^nvidia%s+", ""):gsub("^geforce%s+", "")
      size = KNOWN_VRAM[key]
    end
    gpus[#gpus + 1] = { name = name, count = math.tointeger(count), memory_gb = size }
  end
  if #gpus == 0 then return nil, "no GPU given" end
  return gpus
end

--- GPUs found through NVML: list, and the reason when there are none.
function mining.detect_gpus()
  local found, note = require("aitbc.native.gpu").list()
  local gpus = {}
  for _, g in ipairs(found) do
    gpus[#gpus + 1] = { name = g.name, count = 1, memory_gb = g.memory_total and math.floor(g.memory_total / 2 ^ 30 + 0.5) }
  end
  return gpus, note
end

--- A heartbeat's body: this machine's GPU readings now (NVML), so the
-- node's dashboard and metrics history see utilisation and temperature;
-- {} when there is no GPU or no driver.
function mining.heartbeat_body()
  local found = require("aitbc.native.gpu").list()
  if not found or #found == 0 then return {} end
  local gpus = {}
  for i, g in ipairs(found) do
    gpus[i] = { index = g.index, name = g.name, utilization_gpu = g.utilization_gpu,
      utilization_memory = g.utilization_memory, memory_used = g.memory_used, memory_total = g.memory_total,
      temperature_c = g.temperature_c, power_w = g.power_w }
  end
  return { gpus = gpus }
end

function mining.describe(gpus)
  if #gpus == 0 then return "no GPU" end
  local parts = {}
  for _, g in ipairs(gpus) do
    parts[#parts + 1] = string.format("%dx %s%s", g.count or 1, g.name, g.memory_gb and (" (" .. g.memory_gb .. " GB)") or "")
  end
  return table.concat(parts, ", ")
end

--- The miner id this CLI registered (config file, per node URL).
function mining.saved_id(ctx)
  local miners = type(ctx.config.file.miners) == "table" and ctx.config.file.miners or {}
  return miners[ctx.settings.url]
end

function mining.save_id(ctx, miner_id)
  ctx.config.file.miners = type(ctx.config.file.miners) == "table" and ctx.config.file.miners or {}
  ctx.config.file.miners[ctx.settings.url] = miner_id
  local ok, err = require("aitbc.config").write_file(ctx.config.path, ctx.config.file)
  if not ok then error(err, 0) end
end

--- The API client with this miner's id (miner_id, else the one this CLI
-- registered) in X-Miner-ID.
function mining.client(ctx, miner_id)
  local client = api.from_context(ctx, { role = "miner" })
  client.miner_id = miner_id or mining.saved_id(ctx)
  local request = client.request
  function client:request(method, path, opts)
    opts = opts or {}
    if self.miner_id then
      opts.headers = opts.headers or {}
      opts.headers["X-Miner-ID"] = self.miner_id
    end
    return request(self, method, path, opts)
  end
  return client
end

--- Registers (or updates) this miner; returns the node's answer.
function mining.register(ctx, spec)
  local client = mining.client(ctx, spec.miner_id)
  local data = client:call("POST", "/v1/miners/register", { json = {
    miner_id = spec.miner_id, capabilities = { gpus = json.array(spec.gpus), models = json.array(spec.models or {}),
      model_capabilities = spec.model_capabilities, allow_custom_workflows = spec.allow_custom_workflows },
    price_per_hour = spec.price_per_hour, region = spec.region, concurrency = spec.concurrency,
    payout_address = spec.payout_address or require("aitbc.wallet").active_address(ctx), -- where job payments go
  }, expect = mining.MINER })
  mining.save_id(ctx, data.miner_id)
  return data
end

return mining
