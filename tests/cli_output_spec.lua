-- The CLI framework through the real binary and a real node: tables on and
-- off a terminal, -v/-vv/--debug, JSON consistency, --json/--jq/-q, wait,
-- --watch, paging, live completion, `help`.
local cli = require "support.cli"
local nodes = require "support.node"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local shell_quote, on_terminal = cli.shell_quote, cli.on_terminal

--- Lines of text (without the empty last one).
local function lines(text)
  local out = {}
  for l in text:gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

describe("CLI output and scripting", function()
  local node, client, miner, admin, home
  local env

  setup(function()
    node = nodes.start { args = { "--log-level", "warn" } }
    client, miner, admin = node:key("client"), node:key("miner"), node.admin_key
    home = cli.tempdir()
    env = { AITBC_URL = node.url, AITBC_CLIENT_KEY = client, AITBC_MINER_KEY = miner, AITBC_ADMIN_KEY = admin,
      AITBC_HOME = home, AITBC_OUTPUT = false, AITBC_API_KEY = false, NO_COLOR = false, COLUMNS = false,
      AITBC_DEBUG = false }
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  local function run(args, extra)
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(extra or {}) do e[k] = v end
    return cli.run(args, { home = home, env = e })
  end

  local function submit(prompt, model)
    local status, job = node:request("POST", "/v1/jobs", { key = client,
      json = { payload = { type = "inference", prompt = prompt or "hi" }, model = model or "llama3" } })
    assert.equal(201, status)
    return job.job_id
  end

  --- A miner that runs only `model` takes its job; returns the job's id.
  local function take(miner_id, model)
    local s = node:request("POST", "/v1/miners/register", { key = miner,
      json = { miner_id = miner_id, capabilities = { models = { model } } } })
    assert.is_true(s == 200 or s == 201)
    local status, job = node:request("POST", "/v1/miners/poll", { key = miner, json = { max_wait_seconds = 0 },
      headers = { ["X-Miner-ID"] = miner_id } })
    assert.equal(200, status)
    return job.job_id
  end

  local function finish(job_id, miner_id)
    local s = node:request("POST", "/v1/miners/" .. job_id .. "/result", { key = miner,
      headers = { ["X-Miner-ID"] = miner_id }, json = { result = { response = "done" }, metrics = { eval_count = 2 } } })
    assert.equal(200, s)
  end

  describe("tables", function()
    it("print whole values, tab-separated, off a terminal (| cat, | grep)", function()
      submit(nil, "tsv-model")
      local miner_id = "miner_0bfe2a9c41d7e8f35b6a0c2d9e4f7a1b"
      local job_id = take(miner_id, "tsv-model")
      local r = run { "client", "list" }
      assert.equal(0, r.code, r.err)
      local found
      for _, l in ipairs(lines(r.out)) do
        if l:find(miner_id, 1, true) then found = l end
      end
      assert.is_string(found, "the whole miner id is in the output:\n" .. r.out)
      assert.is_nil(r.out:find("…", 1, true), "nothing cut off a terminal")
      local cells = {}
      for c in (found .. "\t"):gmatch("([^\t]*)\t") do cells[#cells + 1] = c end
      assert.same({ job_id, "RUNNING", "tsv-model", miner_id }, { cells[1], cells[2], cells[3], cells[4] })
      assert.matches("^JOB ID\tSTATE\tMODEL\tMINER\tREQUESTED$", lines(r.out)[1])
    end)

    it("fit COLUMNS, else the terminal's width, on a terminal", function()
      local code, shown = on_terminal({ "client", "list" }, { COLUMNS = "70", AITBC_URL = node.url,
        AITBC_CLIENT_KEY = client, AITBC_HOME = home, NO_COLOR = "1" })
      assert.equal(0, code, shown)
      for _, l in ipairs(lines(shown)) do
        assert.is_true(utf8.len(l) <= 70, "wider than COLUMNS=70: " .. l)
      end
      assert.matches("…", shown)
      assert.matches("%x+  RUNNING", shown) -- aligned with spaces, ids whole
      code, shown = on_terminal({ "client", "list" }, { COLUMNS = false, AITBC_URL = node.url, AITBC_CLIENT_KEY = client,
        AITBC_HOME = home, NO_COLOR = "1" }, "stty cols 200 rows 40; ")
      assert.equal(0, code, shown)
      assert.matches("miner_0bfe2a9c41d7e8f35b6a0c2d9e4f7a1b", shown) -- 200 columns: room for everything
      assert.is_nil(shown:find("…", 1, true))
    end)
  end)

  describe("-v, -vv and --debug", function()
    it("-v shows each request on stderr: method, URL, status, time", function()
      local id = submit()
      local r = run { "-v", "client", "status", id }
      assert.equal(0, r.code, r.err)
      assert.matches("%* GET " .. node.url:gsub("%p", "%%%0") .. "/v1/jobs/" .. id .. " → 200 %([%d.]+ m?s%)", r.err)
      assert.is_nil(r.err:find("X-Api-Key", 1, true), "-v shows no headers")
      assert.is_nil(r.out:find("GET", 1, true), "stdout holds only the result")
    end)

    it("-vv adds headers with the key masked, and bodies", function()
      local id = submit()
      local r = run { "client", "status", id, "-vv" }
      assert.equal(0, r.code, r.err)
      assert.matches("> GET [^\n]+/v1/jobs/" .. id, r.err)
      assert.matches("> X%-Api%-Key: aitbc_…%x%x%x%x\n", r.err)
      assert.is_nil(r.err:find(client, 1, true), "the key itself never appears")
      assert.matches("< content%-type: application/json", r.err)
      assert.matches('< {"[^\n]*"job_id":"' .. id, r.err)
    end)

    it("-v names a request that failed; --debug adds the traceback", function()
      local dead = "http://127.0.0.1:" .. cli.closed_port()
      local r = run({ "-v", "chain", "head" }, { AITBC_URL = dead })
      assert.equal(5, r.code)
      assert.matches("%* GET " .. dead:gsub("%p", "%%%0") .. "/v1/chain/ait%-devnet/head → failed: cannot reach", r.err)
      assert.is_nil(r.err:find("traceback", 1, true))
      r = run({ "--debug", "chain", "head" }, { AITBC_URL = dead })
      assert.equal(5, r.code)
      assert.matches("stack traceback:", r.err)
      assert.matches("lua/aitbc/api%.lua", r.err)
      assert.matches("→ failed", r.err) -- --debug shows the requests too
    end)
  end)

  describe("JSON consistency", function()
    it("writes empty lists as [] (a miner without models, a machine without GPUs)", function()
      local s = node:request("POST", "/v1/miners/register", { key = miner,
        json = { miner_id = "bare-1", capabilities = { gpus = json.array(), models = json.array() } } })
      assert.equal(200, s)
      local r = run { "-o", "json", "miner", "status", "--miner-id", "bare-1" }
      assert.equal(0, r.code, r.err)
      assert.matches('"models": %[%]', r.out)
      assert.matches('"gpus": %[%]', r.out)
      r = run { "-o", "json", "api", "--role", "miner", "/v1/miners/me", "-H", "X-Miner-ID: bare-1" }
      assert.matches('"models": %[%]', r.out)
      r = run { "-o", "json", "miner", "gpus" }
      assert.matches('"gpus": %[', r.out)
      r = run { "-o", "json", "marketplace", "gpu", "list" }
      assert.matches('"items": %[%]', r.out)
    end)

    it("gives receipts RFC 3339 times, and still verifies a receipt signed with Unix seconds (1.0)", function()
      local id = submit(nil, "rfc-model")
      take("rfc-miner", "rfc-model")
      finish(id, "rfc-miner")
      local r = run { "-o", "json", "client", "result", id }
      assert.equal(0, r.code, r.err)
      local d = r.json()
      assert.is_true(d.receipt_verified)
      assert.equal("1.1", d.receipt.version)
      local rfc3339 = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"
      for _, f in ipairs { "requested_at", "started_at", "completed_at" } do assert.matches(rfc3339, d.receipt[f]) end
      local crypto, receipts = require "aitbc.crypto", require "aitbc.protocol.receipts"
      local pk, sk = crypto.sign_keypair()
      local old = receipts.sign({ version = "1.0", receipt_id = "r1", job_id = "j", started_at = 1700000000,
        completed_at = 1700000001, requested_at = "2023-11-14T22:13:19.000Z" }, pk, sk)
      assert.is_true(receipts.verify(json.decode(json.encode(old)), pk))
      local head = run { "-o", "json", "chain", "head" }.json()
      assert.equal("integer", math.type(head.timestamp)) -- signed with the block: stays
      assert.equal(os.date("!%Y-%m-%dT%H:%M:%S", head.timestamp) .. ".000Z", head.time)
    end)
  end)

  describe("--json, --jq and -q", function()
    it("--json FIELDS picks fields (of each item for a list); --json alone lists them", function()
      local id = submit()
      local r = run { "client", "status", id, "--json", "job_id,state" }
      assert.equal(0, r.code, r.err)
      assert.same({ job_id = id, state = "QUEUED" }, r.json())
      r = run { "client", "list", "--json", "job_id,state", "--limit", "2" }
      local list = r.json()
      assert.equal(2, #list)
      assert.same({ "job_id", "state" }, (function()
        local keys = {}
        for k in pairs(list[1]) do keys[#keys + 1] = k end
        table.sort(keys)
        return keys
      end)())
      r = run { "client", "list", "--json" }
      assert.equal(0, r.code)
      assert.matches("^job_id\n", r.out)
      assert.matches("\nassigned_miner_id\n", r.out)
      r = run { "version", "--json", "version" } -- no declared fields: the result's own
      assert.same({ "version" }, (function() local k = {} for n in pairs(r.json()) do k[#k + 1] = n end return k end)())
    end)

    it("checks fields and the jq expression before the command runs (nothing is submitted)", function()
      local before = node:cli({ "-o", "json", "client", "list" }, { env = { AITBC_CLIENT_KEY = client } }).json().total
      local r = run { "client", "submit", "--model", "llama3", "--prompt", "x", "--json", "job_idd" }
      assert.equal(2, r.code)
      assert.matches("unknown JSON field 'job_idd'", r.out)
      assert.matches("job_id", r.out)
      r = run { "client", "submit", "--model", "llama3", "--prompt", "x", "--jq", ".[" }
      assert.equal(2, r.code)
      assert.matches("%-%-jq: .*syntax error", r.err)
      r = run { "client", "submit", "--model", "llama3", "--prompt", "x", "--json" }
      assert.equal(0, r.code)
      assert.matches("^job_id\n", r.out)
      assert.equal(before, run({ "-o", "json", "client", "list" }).json().total)
    end)

    it("--jq filters with the real jq language; strings print raw", function()
      local id = submit()
      local r = run { "client", "status", id, "--jq", ".state" }
      assert.equal(0, r.code, r.err)
      assert.equal("QUEUED\n", r.out)
      r = run { "client", "list", "--jq", "[.items[] | select(.state == \"QUEUED\") | .job_id] | length > 0" }
      assert.equal("true\n", r.out)
      r = run { "client", "list", "--json", "job_id,state", "--jq", "map(.state) | unique | .[]" }
      assert.matches("QUEUED\n", r.out)
      r = run { "client", "status", id, "--jq", ".timings | keys" }
      assert.matches('^%["queue_ms"', r.out)
      r = run { "client", "status", id, "--jq", ".state.x" }
      assert.equal(1, r.code)
      assert.matches("jq: error: Cannot index string", r.err)
      assert.equal("", r.out)
    end)

    it("says clearly when libjq cannot be loaded", function()
      local r = run({ "client", "list", "--jq", ".total" }, { AITBC_LIBJQ = "libjq-not-here.so.1" })
      assert.equal(1, r.code)
      assert.matches("%-%-jq needs libjq, which could not be loaded: cannot load libjq%-not%-here%.so%.1", r.err)
      assert.matches("apt%-get install libjq1", r.err)
    end)

    it("-q prints only the id created, or the ids listed", function()
      local r = run { "client", "submit", "-q", "--model", "llama3", "--prompt", "quiet please" }
      assert.equal(0, r.code, r.err)
      assert.matches("^%x+\n$", r.out)
      local id = r.out:gsub("%s+$", "")
      assert.equal("QUEUED", run({ "client", "status", id, "--jq", ".state" }).out:gsub("%s+$", ""))
      r = run { "client", "list", "-q", "--limit", "3" }
      assert.equal(3, #lines(r.out))
      assert.equal(id, lines(r.out)[1])
      r = run { "client", "status", id, "-q" } -- nothing created: nothing printed
      assert.equal(0, r.code)
      assert.equal("", r.out)
      r = run { "client", "list", "-q", "--json", "job_id" }
      assert.equal(2, r.code)
    end)

    it("declares the fields each command's JSON really has", function()
      local id = submit(nil, "fields-model")
      take("fields-miner", "fields-model")
      finish(id, "fields-miner")
      local s = node:request("POST", "/v1/marketplace/gpu/register", { key = miner,
        json = { model = "T4", vram_gb = 16, hourly_rate = "0.2" } })
      assert.equal(201, s)
      local registry = require "aitbc.cli.registry"
      local function declared(path)
        local d = registry.get(path[1])
        for i = 2, #path do d = d.by_name[path[i]] end
        return d
      end
      for _, args in ipairs {
        { "client", "status", id }, { "client", "result", id }, { "client", "list" },
        { "miner", "status", "--miner-id", "fields-miner" }, { "chain", "head" }, { "chain", "list" },
        { "marketplace", "offers", "list", "--all" }, { "marketplace", "gpu", "list" }, { "config", "show" },
        { "wait", "job", id }, { "chain", "params" },
      } do
        local path = {}
        for _, a in ipairs(args) do
          if a:sub(1, 1) == "-" or #path >= 3 or (#path > 0 and not (declared(path).commands or {})[1]) then break end
          path[#path + 1] = a
        end
        local decl = declared(path)
        local r = run { "-o", "json", table.unpack(args) }
        assert.equal(0, r.code, table.concat(args, " ") .. ": " .. r.err)
        local doc = r.json()
        local records = decl.list and doc[decl.list] or { doc }
        assert.is_true(#records > 0, table.concat(args, " ") .. " gave nothing to check")
        local known = {}
        for _, f in ipairs(decl.fields) do known[f] = true end
        for _, rec in ipairs(records) do
          for k in pairs(rec) do
            assert.is_true(known[k], string.format("'aitbc %s' gives '%s', not in its declared fields", decl.path, k))
          end
        end
      end
    end)
  end)

  describe("aitbc wait", function()
    it("waits for a job's state, reporting progress on stderr, and exits 0", function()
      local id = submit(nil, "wait-model")
      local proc = assert(sys.spawn { argv = { cli.bin, "wait", "job", id, "--timeout", "60" },
        env = env, stdout = "pipe", stderr = "stdout" })
      local seen = ""
      while not seen:find("queued", 1, true) do seen = seen .. assert(proc:read(10), "no progress: " .. seen) end
      take("waited-miner", "wait-model")
      finish(id, "waited-miner")
      local code, out = proc:communicate(nil, 60)
      assert.equal(0, code, seen .. out)
      seen = seen .. out
      assert.matches("job " .. id .. ": queued", seen)
      assert.matches("job " .. id .. ": completed on waited%-miner", seen)
      assert.matches("✓ job " .. id .. " is completed %(after [%d.]+ s%)", seen)
      local r = run { "-o", "json", "wait", "job", id }
      assert.equal(0, r.code)
      local d = r.json()
      assert.same({ "job", id, "COMPLETED" }, { d.kind, d.id, d.state })
      assert.equal("waited-miner", d.object.assigned_miner_id)
    end)

    it("exits 124 when --timeout passes, 1 when the job ends otherwise, 3 for no such job", function()
      local id = submit()
      local r = run { "wait", "job", id, "--for", "running", "--timeout", "0.3" }
      assert.equal(124, r.code)
      assert.matches("job " .. id .. " is still QUEUED after 0%.3 s; it was to become RUNNING", r.err)
      r = run { "-o", "json", "wait", "job", id, "--timeout", "0" }
      assert.equal(124, r.code)
      assert.equal("wait_timeout", r.json().error.code)
      assert.equal(0, run({ "client", "cancel", id }).code)
      r = run { "wait", "job", id, "--for", "completed" }
      assert.equal(1, r.code)
      assert.matches("ended CANCELED: canceled by client; it will never be COMPLETED", r.err)
      assert.equal(0, run({ "wait", "job", id, "--for", "completed,canceled", "-q" }).code)
      assert.equal(3, run({ "wait", "job", "nosuchjob" }).code)
      r = run { "wait", "job", id, "--for", "done" }
      assert.equal(2, r.code)
      assert.matches("a job is never 'done'", r.err)
    end)

    it("waits for a transaction to be included", function()
      local address = run({ "wallet", "address", "-q" }, { AITBC_WALLET_PASSWORD = "pw-12345678" })
      if address.code ~= 0 then
        assert.equal(0, run({ "wallet", "create", "--name", "waiter" }, { AITBC_WALLET_PASSWORD = "pw-12345678" }).code)
      end
      local r = run { "wallet", "faucet", "-q", "--amount", "1" }
      assert.equal(0, r.code, r.err)
      local hash = r.out:gsub("%s+$", "")
      assert.equal(0, run({ "wait", "tx", hash, "--for", "pending,included", "--timeout", "10" }).code)
      local proc = assert(sys.spawn { argv = { cli.bin, "wait", "tx", hash, "--timeout", "60" }, env = env,
        stdout = "pipe", stderr = "pipe" })
      assert.equal(0, run({ "chain", "seal" }).code)
      local code, out, err = proc:communicate(nil, 60)
      assert.equal(0, code, err)
      assert.matches("transaction " .. hash .. " is included", out)
    end)

    it("answers 'not available yet' for deployments; a proposal that does not exist is not found", function()
      local r = run { "wait", "deployment", "p1" }
      assert.equal(2, r.code)
      assert.matches("not available yet", r.err)
      r = run { "wait", "proposal", "prop_000000000000" }
      assert.equal(3, r.code)
      assert.matches("no proposal prop_000000000000", r.err)
      assert.equal(2, run({ "wait", "proposal", "prop_000000000000", "--for", "maybe" }).code)
      assert.equal(2, run({ "wait", "jbo", "x" }).code)
    end)
  end)

  describe("--watch", function()
    it("repeats frames off a terminal until Ctrl-C, then exits 130", function()
      local id = submit()
      local e = {}
      for k, v in pairs(env) do e[k] = v end
      local proc = assert(sys.spawn { argv = { cli.bin, "client", "status", id, "--watch", "0.1", "-o", "json" }, env = e,
        stdout = "pipe", stderr = "pipe" })
      local seen = ""
      while select(2, seen:gsub("\n", "")) < 3 do
        local chunk = proc:read(10)
        assert.is_string(chunk, "frames stopped coming")
        seen = seen .. chunk
      end
      proc:kill(2)
      local code, rest = proc:communicate(nil, 10)
      assert.equal(130, code)
      for _, l in ipairs(lines(seen .. (rest or ""))) do
        assert.equal(id, json.decode(l).job_id) -- one compact document per frame
      end
    end)

    it("redraws in place on a terminal", function()
      local id = submit()
      local proc = assert(sys.spawn { argv = { "script", "-qec", "exec " .. shell_quote(cli.bin) .. " client status " .. id
        .. " --watch 0.1", "/dev/null" }, env = env, stdin = "null", stdout = "pipe", stderr = "pipe" })
      local seen = ""
      while select(2, seen:gsub("\27%[H\27%[2J", "")) < 2 do
        local chunk = proc:read(10)
        assert.is_string(chunk, "no frames: " .. seen)
        seen = seen .. chunk
      end
      proc:kill(2)
      proc:communicate(nil, 10)
      assert.matches("every 0%.1s: aitbc client status " .. id, seen)
      assert.matches("job id[^\n]*" .. id, seen)
    end)

    it("leaves on q when the terminal is its input too (exit 0)", function()
      local id = submit()
      local code, shown = cli.on_terminal({ "client", "status", id, "--watch", "30" }, env, nil, "q")
      assert.equal(0, code)
      assert.matches("%(q or Ctrl%-C to stop%)", shown)
      assert.matches("job id[^\n]*" .. id, shown)
    end)
  end)

  describe("paging", function()
    it("passes --limit and --offset to the node's own paging", function()
      for i = 1, 3 do submit("page " .. i) end
      local all = lines(run({ "client", "list", "-q", "--limit", "4" }).out)
      assert.same({ all[2], all[3] }, lines(run({ "client", "list", "-q", "--limit", "2", "--offset", "1" }).out))
      for i, rate in ipairs { "0.3", "0.4", "0.5" } do -- three places: three listings (the same GPU again updates)
        assert.equal(201, (node:request("POST", "/v1/marketplace/gpu/register", { key = miner,
          json = { model = "L4", vram_gb = 24, hourly_rate = rate, region = "r" .. i } })))
      end
      local listings = lines(run({ "marketplace", "gpu", "list", "-q" }).out)
      assert.is_true(#listings >= 3)
      assert.same({ listings[2], listings[3] }, lines(run({ "marketplace", "gpu", "list", "-q", "--limit", "2",
        "--offset", "1" }).out))
      local r = run { "-o", "json", "marketplace", "gpu", "list", "--limit", "1" }
      assert.equal(1, #r.json().items)
      assert.is_true(r.json().total >= 3)
    end)

    it("pages lists kept on this machine too", function()
      local keys = lines(run({ "config", "show", "-q" }).out)
      assert.is_true(#keys >= 4)
      assert.same({ keys[2], keys[3] }, lines(run({ "config", "show", "-q", "--offset", "1", "--limit", "2" }).out))
    end)
  end)

  describe("completion", function()
    it("offers live job ids from the node, wallets, fields and wait kinds", function()
      local id = submit()
      local r = run { "__complete", "client", "status" }
      assert.equal(0, r.code, r.err)
      assert.matches("\n?" .. id .. "\n", r.out)
      assert.matches("%-%-watch\n", r.out)
      r = run { "__complete", "wait" }
      assert.matches("^job\ntx\nproposal\ndeployment\n", r.out)
      r = run { "__complete", "wait", "job" }
      assert.matches(id, r.out)
      r = run { "__complete", "client", "list", "--json" }
      assert.matches("^job_id\n", r.out)
      assert.is_true(sys.mkdir(home .. "/wallets", tonumber("700", 8)) ~= nil or sys.stat(home .. "/wallets"))
      assert(sys.write_file(home .. "/wallets/complete-me.json", "{}", tonumber("600", 8)))
      r = run { "__complete", "wallet", "switch" }
      assert.matches("complete%-me\n", r.out)
      r = run { "__complete", "client" }
      assert.matches("\nhelp\n", r.out)
    end)

    it("offers no ids, and still the options, when the node does not answer", function()
      local r = run({ "__complete", "client", "status" }, { AITBC_URL = "http://127.0.0.1:" .. cli.closed_port() })
      assert.equal(0, r.code)
      assert.matches("^%-%-", r.out)
    end)
  end)

  describe("help", function()
    it("aitbc help GROUP and aitbc GROUP help work as --help does", function()
      local want = run({ "client", "--help" }).out
      assert.equal(want, run({ "help", "client" }).out)
      assert.equal(want, run({ "client", "help" }).out)
      local sub = run({ "client", "submit", "--help" }).out
      assert.equal(sub, run({ "help", "client", "submit" }).out)
      assert.equal(sub, run({ "client", "help", "submit" }).out)
      assert.equal(run({ "marketplace", "gpu", "register", "--help" }).out, run({ "marketplace", "help", "gpu", "register" }).out)
      assert.equal(run({ "--help" }).out, run({ "help" }).out)
      local r = run { "help", "clinet" }
      assert.equal(2, r.code)
      assert.matches("did you mean 'client'", r.err)
      assert.equal(2, run({ "client", "help", "bogus" }).code)
    end)
  end)
end)
