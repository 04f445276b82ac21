--- Records what the older Python CLI (oib/AITBC at 5ff2d75cd1) sends, as
-- fixtures for tests/upstream_compat_spec.lua (README: "The older clients").
--
--   build/aitbc run tests/support/upstream/record.lua UPSTREAM_CLI_DIR [FIXTURES] [RAW_LOG]
--
-- UPSTREAM_CLI_DIR holds the older CLI's aitbc_cli package (its cli/
-- folder); FIXTURES defaults to tests/fixtures/upstream_cli_requests.json;
-- RAW_LOG, when given, keeps every exchange (the node's answers too) and
-- what the older CLI printed.  Python: $PYTHON or /usr/bin/python3 (the
-- Debian packages the README names).
--
-- A real node (`aitbc serve`) runs behind a recording proxy
-- (proxy_app.lua, on the in-process test server); the older CLI, unchanged,
-- is pointed at the proxy with its own settings (AITBC_URL, AITBC_API_KEY)
-- and runs the commands of STEPS in order.  Ids flow from the node's
-- answers (captures) into later command lines; in the fixtures they become
-- placeholders again.  A fixture the node does not serve as the older CLI
-- expects is marked pending with the reason (support/upstream/compat.lua).
package.path = "./tests/?.lua;./tests/?/init.lua;" .. package.path
local cli = require "support.cli"
local compat = require "support.upstream.compat"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

local upstream_dir, fixtures_path, raw_path = ...
if not upstream_dir then
  io.stderr:write("usage: aitbc run tests/support/upstream/record.lua UPSTREAM_CLI_DIR [FIXTURES] [RAW_LOG]\n")
  return 2
end
fixtures_path = fixtures_path or "tests/fixtures/upstream_cli_requests.json"
local python = os.getenv("PYTHON") or "/usr/bin/python3"

local JOB_FILE = "tests/support/upstream/job_file.json"

-- One step per older CLI command line; `requests` lists, in order, the
-- requests that command sends, with what its code accepts and reads:
--   accepts   statuses the older CLI treats as success
--   reads     response fields the older CLI itself uses
--   captures  placeholder -> response field: the id later steps use (if
--             the placeholder is known already, the answer must repeat it)
--   expect_items  a rule over the listed items (filters honoured)
-- `action` steps are not the older CLI's: what a user does between its
-- commands (here: paying with a wallet, which the older CLI cannot sign).
-- the filtered GPU lists: the RTX 4090 (24 GB, 0.5/h), not the RTX 3060 (12 GB, 2.0/h)
local FILTERED_4090 = { list = "items", field = { "model", "gpu_model" }, equals = "RTX 4090", min = 1,
  why = "model RTX 4090, at least 16 GB, at most 1.0 an hour: not the RTX 3060" }

local STEPS = {
  { role = "miner", args = { "miner", "register", "--gpu", "RTX 4090", "--memory", "24", "--cuda-cores", "16384" },
    requests = { { name = "miner_register", accepts = { 200, 204 },
      note = "the older CLI ignores the answer's body and prints its own {miner_id, status, capabilities}" } } },
  { role = "miner", args = { "miner", "heartbeat" },
    requests = { { name = "miner_heartbeat", accepts = { 200, 204 }, note = "the answer's body is ignored" } } },
  { role = "client", args = { "client", "submit", "--prompt", "Say hello", "--model", "llama3:latest" },
    requests = { { name = "client_submit_prompt", accepts = { 201 }, reads = { "job_id" },
      captures = { ["<job_id>"] = "job_id" } } } },
  { role = "client", args = { "client", "status", "<job_id>" },
    requests = { { name = "client_status", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "client", "result", "<job_id>" },
    requests = {
      { name = "client_result_not_ready", accepts = { 200, 425 },
        note = "425 (not ready) is expected here: the CLI then asks for the job's state" },
      { name = "client_result_not_ready_status", accepts = { 200 }, reads = { "state" } } } },
  { role = "miner", args = { "miner", "poll" },
    requests = { { name = "miner_poll", accepts = { 200, 204 }, captures = { ["<job_id>"] = "job_id" },
      note = "prints the job as it is; the job handed out must be the one queued" } } },
  { role = "client", args = { "client", "cancel", "<job_id>" },
    requests = { { name = "client_cancel", accepts = { 200 }, note = "a running job, canceled by its client" } } },
  { role = "client", args = { "client", "submit", "--file", JOB_FILE },
    requests = { { name = "client_submit_file", accepts = { 201 }, reads = { "job_id" },
      captures = { ["<file_job_id>"] = "job_id" }, note = "the file's JSON is the payload; its model is not installed" } } },
  { role = "client", args = { "client", "submit", "--prompt", "What is 2+2?", "--model", "llama3:latest" },
    requests = { { name = "client_submit_mined", accepts = { 201 }, reads = { "job_id" },
      captures = { ["<mined_job_id>"] = "job_id" } } } },
  { role = "miner", ollama = true,
    args = { "miner", "mine-ollama", "--jobs", "1", "--model", "llama3:latest", "--ollama-url", "<ollama_url>" },
    requests = {
      { name = "miner_mine_ollama_poll_1", accepts = { 200 }, reads = { "job_id", "payload" },
        captures = { ["<file_job_id>"] = "job_id" }, note = "the oldest queued job first" },
      { name = "miner_fail", accepts = { 200 },
        note = "Ollama has no such model: the CLI reports the failure (it ignores the answer's status)" },
      { name = "miner_mine_ollama_poll_2", accepts = { 200 }, reads = { "job_id", "payload" },
        captures = { ["<mined_job_id>"] = "job_id" } },
      { name = "miner_result", accepts = { 200 } } } },
  { role = "client", args = { "client", "result", "<mined_job_id>" },
    requests = { { name = "client_result", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "client", "receipts", "--limit", "5", "--job-id", "<mined_job_id>" },
    requests = { { name = "client_receipts", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "client", "blocks", "--limit", "5" },
    requests = { { name = "client_blocks", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "client", "history", "--limit", "5", "--status", "COMPLETED", "--type", "inference",
    "--from-time", "2020-01-01T00:00:00", "--to-time", "2099-12-31T23:59:59" },
    requests = { { name = "client_history", accepts = { 200 }, note = "prints the answer as it is",
      expect_items = { list = "items", field = "state", equals = "COMPLETED", min = 1,
        why = "status=COMPLETED: one completed job, not the failed and canceled ones" } } } },
  { role = "client", args = { "client", "submit", "--prompt", "Paid work", "--model", "llama3:latest" },
    requests = { { name = "client_submit_paid", accepts = { 201 }, reads = { "job_id" },
      captures = { ["<paid_job_id>"] = "job_id" } } } },
  { role = "client", args = { "client", "pay", "<paid_job_id>", "1.5" },
    requests = { { name = "client_pay", accepts = { 422 }, expect_error = "pay with: aitbc client pay ",
      deviation = "the older CLI expects 201, but a payment is an escrow lock signed by the client's wallet, which "
        .. "the node cannot sign: it answers 422 with the command that pays (the older CLI prints that error)" } } },
  { action = "pay_with_wallet", commands = {
      { args = { "wallet", "create", "--name", "payer" } },
      { args = { "wallet", "faucet", "--amount", "100" } },
      { args = { "-o", "json", "client", "pay", "<paid_job_id>", "--amount", "2" },
        captures = { ["<payment_id>"] = "payment_id" } } },
    why = "the older CLI cannot sign an escrow lock: the payment the next commands look at is made with "
      .. "`aitbc client pay <paid_job_id> --amount 2` from a funded wallet" },
  { role = "client", args = { "client", "payment-status", "<paid_job_id>" },
    requests = { { name = "client_payment_status", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "client", "payment-receipt", "<payment_id>" },
    requests = { { name = "client_payment_receipt", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "client", "refund", "<paid_job_id>", "<payment_id>", "--reason", "no longer needed" },
    requests = { { name = "client_refund", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "miner", args = { "marketplace", "gpu", "register", "--name", "RTX 4090", "--memory", "24", "--cuda-cores",
    "16384", "--compute-capability", "8.9", "--price-per-hour", "0.5", "--description", "RTX 4090 on a home rig",
    "--miner-id", "cli-miner" },
    requests = { { name = "marketplace_gpu_register", accepts = { 200, 201 }, reads = { "gpu_id" },
      captures = { ["<gpu_id>"] = "gpu_id" } } } },
  { role = "miner", args = { "marketplace", "gpu", "register", "--name", "RTX 3060", "--memory", "12",
    "--price-per-hour", "2.0", "--miner-id", "cli-miner" },
    requests = { { name = "marketplace_gpu_register_other", accepts = { 200, 201 }, reads = { "gpu_id" },
      note = "a second GPU, which the filtered lists below must leave out" } } },
  { role = "client", args = { "marketplace", "gpu", "list" },
    requests = { { name = "marketplace_gpu_list", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "marketplace", "gpu", "list", "--available", "--model", "RTX 4090", "--memory-min", "16",
    "--price-max", "1.0", "--limit", "10" },
    requests = { { name = "marketplace_gpu_list_filtered", accepts = { 200 }, note = "prints the answer as it is",
      expect_items = FILTERED_4090 } } },
  { role = "client", args = { "marketplace", "gpu", "details", "<gpu_id>" },
    requests = { { name = "marketplace_gpu_details", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "marketplace", "pricing", "RTX 4090" },
    requests = { { name = "marketplace_pricing", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "marketplace", "offers", "list" },
    requests = { { name = "marketplace_offers_list", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "marketplace", "offers", "list", "--status", "open", "--gpu-model", "RTX 4090",
    "--price-max", "1.0", "--memory-min", "16", "--limit", "10" },
    requests = { { name = "marketplace_offers_list_filtered", accepts = { 200 }, note = "prints the answer as it is",
      expect_items = FILTERED_4090 } } },
  { role = "client", args = { "marketplace", "gpu", "book", "<gpu_id>", "--hours", "2" },
    requests = { { name = "marketplace_gpu_book", accepts = { 422 }, expect_error = "pay with: aitbc marketplace gpu book ",
      deviation = "the older CLI expects 200/201, but a booking locks its hours in escrow from the renter's wallet, "
        .. "which the node cannot sign: it answers 422 with the command that books" } } },
  { action = "book_with_wallet", commands = {
      { args = { "-o", "json", "wallet", "address" }, captures = { ["<wallet_address>"] = "address" } },
      { args = { "marketplace", "gpu", "update", "<gpu_id>", "--payout-address", "<wallet_address>" } },
      { args = { "-o", "json", "marketplace", "gpu", "book", "<gpu_id>", "--hours", "2" },
        captures = { ["<booking_id>"] = "booking_id" } } },
    why = "the older CLI cannot sign a rental lock, and its gpu register names no payout address: the provider names "
      .. "one (the same wallet here: this replay checks the wire, not balances) and the renter books with "
      .. "`aitbc marketplace gpu book <gpu_id> --hours 2`" },
  { role = "client", args = { "marketplace", "orders" },
    requests = { { name = "marketplace_orders", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "marketplace", "gpu", "release", "<gpu_id>" },
    requests = { { name = "marketplace_gpu_release", accepts = { 200 }, note = "the answer's body is ignored" } } },
  { role = "client", args = { "marketplace", "review", "<gpu_id>", "--rating", "5", "--comment", "Fast and stable" },
    requests = { { name = "marketplace_review", accepts = { 200, 201 }, note = "the answer's body is ignored" } } },
  { role = "client", args = { "marketplace", "reviews", "<gpu_id>" },
    requests = { { name = "marketplace_reviews", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "marketplace", "bid", "submit", "--provider", "cli-miner", "--capacity", "1", "--price",
    "0.4", "--notes", "RTX 4090 for 2 hours" },
    requests = { { name = "marketplace_bid_submit", accepts = { 422 },
      expect_error = "post it with: aitbc marketplace bid submit ",
      deviation = "the older CLI expects 202, but a bid locks hours × its price in escrow from the client's wallet, "
        .. "which the node cannot sign: it answers 422 with the command that posts one" } } },
  { action = "bid_with_wallet", commands = {
      { args = { "-o", "json", "marketplace", "bid", "submit", "--hours", "2", "--max-price", "0.4", "--model",
        "RTX 4090", "--notes", "RTX 4090 for 2 hours" }, captures = { ["<bid_id>"] = "bid_id" } } },
    why = "the older CLI cannot sign the bid's escrow lock: the bid the next commands look at is posted with "
      .. "`aitbc marketplace bid submit --hours 2 --max-price 0.4 --model \"RTX 4090\"`" },
  { role = "miner", args = { "marketplace", "bid", "list" },
    requests = { { name = "marketplace_bid_list", accepts = { 200 }, note = "prints the answer as it is" } } },
  { role = "client", args = { "marketplace", "bid", "details", "<bid_id>" },
    requests = { { name = "marketplace_bid_details", accepts = { 200 }, note = "prints the answer as it is" } } },
}

-- Headers that matter to a server (and the client's name, for the record).
local KEEP_HEADERS = { ["x-api-key"] = "X-Api-Key", ["x-miner-id"] = "X-Miner-ID", ["content-type"] = "Content-Type",
  ["user-agent"] = "User-Agent" }

local raw = {} -- what goes to RAW_LOG
local function note(fmt, ...) io.stderr:write(string.format(fmt, ...), "\n") end

-- ---- the node, the proxy, the simulated Ollama ----

local node = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
local values = { ["<client_key>"] = node:key("client"), ["<miner_key>"] = node:key("miner") }
local work = cli.tempdir()
local log_path = work .. "/exchanges.jsonl"
assert(io.open(log_path, "w")):close()
local proxy = assert(require("aitbc.server").start { port = 0, handler = "support.upstream.proxy_app",
  config = json.encode { node = node.url, log = log_path } })
local proxy_url = "http://127.0.0.1:" .. proxy:port()
values["<ollama_url>"] = cli.simulated_ollama()
local home = cli.tempdir() -- the older CLI's HOME: it writes ~/.aitbc/plugins

local function read_log()
  local out = {}
  for line in assert(io.open(log_path)):lines() do out[#out + 1] = json.decode(line) end
  return out
end

-- ---- running the older CLI ----

local function older_cli(step, argv)
  local env = { HOME = home, AITBC_URL = proxy_url, AITBC_API_KEY = values["<" .. step.role .. "_key>"],
    PYTHONPATH = upstream_dir, COLUMNS = "200", PYTHONDONTWRITEBYTECODE = "1" }
  local proc = assert(cli.spawn { argv = { python, "-c",
    "import sys; sys.argv[0] = 'aitbc'; from aitbc_cli.main import main; main()", table.unpack(argv) },
    env = env, stdout = "pipe", stderr = "pipe" })
  local code, out, err = proc:communicate(nil, 120)
  assert(code, "the older CLI did not finish: " .. table.concat(argv, " "))
  return code, out, err
end

--- The command line as a user types it (placeholders for ids).
local function command_line(args)
  local words = { "aitbc" }
  for _, a in ipairs(args) do words[#words + 1] = a:find("[%s'\"?*]") and cli.shell_quote(a) or a end
  return table.concat(words, " ")
end

-- ---- ids back to placeholders ----

--- Replaces every known value in text by its placeholder (longest first).
local function placeholders_in(text)
  local known = {}
  for p, v in pairs(values) do if type(v) == "string" and #v >= 6 then known[#known + 1] = { p, v } end end
  table.sort(known, function(a, b) return #a[2] > #b[2] end)
  for _, pv in ipairs(known) do
    text = text:gsub(pv[2]:gsub("%p", "%%%0"), (pv[1]:gsub("%%", "%%%%")))
  end
  return text
end

local feeder = {} -- placeholder -> "fixture.field" that last gave it
local pending_of = {} -- fixture name -> why it is pending

local function feeds_of(fixture)
  local texts = { fixture.path, fixture.body }
  for _, v in pairs(fixture.query) do texts[#texts + 1] = v end
  local feeds, why = {}, nil
  for _, text in ipairs(texts) do
    for _, p in ipairs(compat.placeholders(text)) do
      feeds[p] = feeder[p]
      local from = feeder[p] and feeder[p]:match("^([^%.]+)%.")
      if from and pending_of[from] and not why then
        why = string.format("%s comes from %s, itself pending", p, from)
      end
    end
  end
  return next(feeds) and feeds or nil, why
end

local function fixture_of(step, spec, ex)
  local headers = {}
  for name, value in pairs(ex.headers) do
    if KEEP_HEADERS[name] then headers[KEEP_HEADERS[name]] = placeholders_in(value) end
  end
  local query = {}
  for k, v in pairs(ex.query) do query[k] = placeholders_in(v) end
  local f = {
    name = spec.name, command = placeholders_in(command_line(step.args)), method = ex.method,
    path = placeholders_in(ex.path), query = query, headers = headers, body = placeholders_in(ex.body),
    accepts = spec.accepts, reads = spec.reads or {}, captures = spec.captures, expect_items = spec.expect_items,
    expect_error = spec.expect_error, deviation = spec.deviation, note = spec.note, status_seen = ex.status,
  }
  local problems = compat.problems(f, ex.status, ex.response, values)
  local feeds, fed_pending = feeds_of(f)
  f.feeds = feeds
  if fed_pending then table.insert(problems, 1, fed_pending) end
  if #problems > 0 then
    f.pending = placeholders_in(table.concat(problems, "; "))
    pending_of[f.name] = f.pending
  end
  return f
end

--- Takes the placeholders a fixture captures from the node's answer.
local function capture(f, response)
  local doc = response and response ~= "" and json.decode(response) or nil
  for p, field in pairs(f.captures or {}) do
    local v = doc and compat.field(doc, field)
    if v ~= nil then
      values[p] = values[p] or tostring(v)
      feeder[p] = f.name .. "." .. field
    elseif not values[p] then
      -- the node gave none: later commands still need a word there
      values[p] = "unrecorded" .. p:gsub("[<>]", "_")
      feeder[p] = f.name .. "." .. field
    end
  end
end

-- ---- what a user does with our CLI between the older CLI's commands ----

local wallet_home = cli.tempdir()
--- Our CLI against the node, with both keys (it picks the one each route needs).
local function ours_logged(args)
  local r = cli.run(args, { home = wallet_home, timeout = 60, env = { AITBC_URL = node.url,
    AITBC_CLIENT_KEY = values["<client_key>"], AITBC_MINER_KEY = values["<miner_key>"],
    AITBC_WALLET_PASSWORD = "recording wallet pw" } })
  raw[#raw + 1] = { action_command = table.concat(args, " "), code = r.code, out = r.out, err = r.err }
  return r
end

-- ---- recording ----

local fixtures, actions = {}, {}
for _, step in ipairs(STEPS) do
  if step.action then
    assert(compat.run_action(step, values, ours_logged))
    for _, c in ipairs(step.commands) do
      for p, field in pairs(c.captures or {}) do feeder[p] = "action:" .. step.action .. "." .. field end
    end
    actions[#actions + 1] = { before = nil, action = step.action, commands = step.commands, why = step.why,
      index = #fixtures + 1 }
  else
    local argv = {}
    for i, a in ipairs(step.args) do argv[i] = assert(compat.substitute(a, values)) end
    local before = #read_log()
    local code, out, err = older_cli(step, argv)
    local seen = read_log()
    raw[#raw + 1] = { command = table.concat(argv, " "), code = code, out = out, err = err }
    note("%s -> exit %d, %d request(s)", command_line(step.args), code, #seen - before)
    if #seen - before ~= #step.requests then
      error(string.format("%s sent %d request(s), %d expected:\n%s\n%s", command_line(argv), #seen - before,
        #step.requests, out, err))
    end
    for i, spec in ipairs(step.requests) do
      local ex = seen[before + i]
      raw[#raw + 1] = ex
      local f = fixture_of(step, spec, ex)
      capture(f, ex.response)
      fixtures[#fixtures + 1] = f
    end
  end
end
for _, a in ipairs(actions) do
  a.before = fixtures[a.index] and fixtures[a.index].name
  a.index = nil
end

-- ---- writing ----

local FIELDS = { "name", "command", "method", "path", "query", "headers", "body", "accepts", "reads", "captures",
  "feeds", "expect_items", "expect_error", "deviation", "note", "status_seen", "pending" }

local function fixture_json(f)
  local parts = {}
  for _, k in ipairs(FIELDS) do
    local v = f[k]
    if (k == "accepts" or k == "reads") and v then v = json.array(v) end
    if v ~= nil then parts[#parts + 1] = string.format("    %s: %s", json.quote(k), json.encode(v)) end
  end
  return "  {\n" .. table.concat(parts, ",\n") .. "\n  }"
end

local about = {
  recorded_with = "oib/AITBC cli at 5ff2d75cd1 (aitbc_cli 0.1.0), Debian 12 python3-httpx, unchanged, "
    .. "through tests/support/upstream/record.lua",
  placeholders = "<client_key>/<miner_key>: API keys made on the node (POST /v1/admin/keys); ids: see each "
    .. "fixture's feeds (fixture.field that gave them) and captures",
  path_and_query = "as the server hands them to a handler: percent-decoded (the replay encodes them again)",
}
local items = {}
for i, f in ipairs(fixtures) do items[i] = fixture_json(f) end
local text = "{\n  \"about\": " .. json.encode(about) .. ",\n  \"actions\": " .. json.encode(json.array(actions))
  .. ",\n  \"fixtures\": [\n" .. table.concat(items, ",\n") .. "\n  ]\n}\n"
assert(sys.write_file(fixtures_path, text, 420)) -- 0644
note("wrote %d fixtures (%d pending) to %s", #fixtures, (function()
  local n = 0
  for _ in pairs(pending_of) do n = n + 1 end
  return n
end)(), fixtures_path)

if raw_path then
  local lines = {}
  for i, r in ipairs(raw) do lines[i] = json.encode(r) end
  assert(sys.write_file(raw_path, table.concat(lines, "\n") .. "\n"))
end

proxy:stop()
node:stop()
cli.cleanup()
return 0
