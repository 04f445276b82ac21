--- The fleet (spec §9): the node registry (AITBC_HOME/nodes.json), `node
-- test` and `node chains` against real loopback nodes — leaders, followers,
-- copies made to be behind or to diverge.  10.0.0.5 (9.1) is only stored;
-- nothing here contacts anything but loopback.
local cli = require "support.cli"
local nodes = require "support.node"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local ADMIN_ROUTE = "/v1/chain/ait-devnet/blocks"

--- Seals a block on node now (admin); returns its height.
local function seal(node, chain)
  local status, block = node:request("POST", chain and ("/v1/chain/" .. chain .. "/blocks") or ADMIN_ROUTE,
    { key = node.admin_key })
  assert.equal(201, status)
  return block.height
end

local function head(node, chain)
  local _, h = node:request("GET", "/v1/chain/" .. (chain or "ait-devnet") .. "/head")
  return h
end

describe("node registry", function()
  local home

  before_each(function() home = cli.tempdir() end)

  local function run(args, opts)
    opts = opts or {}
    opts.home = home
    return cli.run(args, opts)
  end

  it("9.1 stores a node and contacts nothing", function()
    local r = run { "node", "add", "--name", "us-east-1", "--host", "10.0.0.5", "--port", "8080", "--type", "validator" }
    assert.equal(0, r.code, r.err)
    assert.matches("node us%-east%-1 added successfully: http://10%.0%.0%.5:8080 %(validator%)", r.out)
    local st = assert(sys.stat(home .. "/nodes.json"))
    assert.equal(tonumber("600", 8), st.mode)
    local doc = json.decode(sys.read_file(home .. "/nodes.json"))
    assert.equal(1, doc.version)
    local n = doc.nodes[1]
    assert.same({ "added_at", "host", "name", "port", "scheme", "type" }, (function()
      local keys = {}
      for k in pairs(n) do keys[#keys + 1] = k end
      table.sort(keys)
      return keys
    end)())
    assert.same({ "us-east-1", "10.0.0.5", 8080, "validator", "http" }, { n.name, n.host, n.port, n.type, n.scheme })
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", n.added_at)

    -- a node that does answer is not asked anything when it is added
    local srv, url = cli.echo_server { handler = "support.count_app" }
    local before = sys.counters()["count_app.requests"] or 0
    r = run { "node", "add", "local", url, "--type", "full" }
    assert.equal(0, r.code, r.err)
    assert.equal(before, sys.counters()["count_app.requests"] or 0)
    assert.equal(0, run({ "node", "list" }).code)
    assert.equal(before, sys.counters()["count_app.requests"] or 0)
    srv:stop(0)

    local list = run({ "-o", "json", "node", "list" }).json().items
    assert.same({ "us-east-1", "local" }, { list[1].name, list[2].name })
    assert.equal(url, list[2].url)
    assert.matches("^us%-east%-1\nlocal\n", run({ "__complete", "node", "test", "--node" }).out) -- shell completion
  end)

  it("refuses a taken name, bad values naming the field, and says when a node is not there", function()
    assert.equal(0, run({ "node", "add", "--name", "a", "--host", "127.0.0.1" }).code)
    local r = run { "node", "add", "--name", "a", "--host", "127.0.0.2" }
    assert.equal(1, r.code)
    assert.matches("already exists", r.err)
    for field, args in pairs {
      host = { "--name", "b", "--host", "http://10.0.0.5" }, name = { "--name", "b c", "--host", "h" },
      port = { "--name", "b", "--host", "h", "--port", "0" }, type = { "--name", "b", "--host", "h", "--type", "x" },
      url = { "b", "ftp://x" },
    } do
      local args_all = { "-o", "json", "node", "add" }
      for _, a in ipairs(args) do args_all[#args_all + 1] = a end
      r = run(args_all)
      assert.equal(2, r.code, field .. ": " .. r.out)
      if field ~= "port" and field ~= "type" then assert.equal(field, r.json().error.field, r.out) end
    end
    r = run { "node", "remove", "nope" }
    assert.equal(3, r.code)
    assert.matches("not found", r.err)
    assert.equal(3, run({ "node", "show", "nope" }).code)
    assert.equal(3, run({ "node", "test", "--node", "nope" }).code)
    r = run { "node", "remove", "a" }
    assert.equal(0, r.code)
    assert.matches("removed successfully", r.out)
    assert.same({}, json.decode(sys.read_file(home .. "/nodes.json")).nodes)
  end)

  it("keeps a node's API key with the other keys: config file, 0600, masked, gone with the node", function()
    local node = nodes.start()
    local key = node:key("client")
    local url = node.url
    local r = run { "node", "add", "n1", url, "--api-key", key }
    assert.equal(0, r.code, r.err)
    assert.is_nil(sys.read_file(home .. "/nodes.json"):find(key, 1, true), "not in the registry")
    local config = json.decode(sys.read_file(home .. "/config.json"))
    assert.equal(key, config.node_keys.n1.key)
    assert.equal(tonumber("600", 8), sys.stat(home .. "/config.json").mode)
    local shown = run({ "-o", "json", "node", "show", "n1" }).json()
    assert.not_equal(key, shown.api_key)
    assert.matches("^key_", shown.api_key_id)
    assert.equal(key, run({ "-o", "json", "node", "show", "n1", "--reveal" }).json().api_key)
    local t = run({ "-o", "json", "node", "test", "--node", "n1" }).json()
    assert.is_true(t.api_key.accepted)
    assert.equal("client", t.api_key.role)
    assert.equal(2, run({ "node", "add", "n2", url, "--api-key", "not-a-key" }).code)
    assert.equal(0, run({ "node", "remove", "n1" }).code)
    assert.is_nil(json.decode(sys.read_file(home .. "/config.json")).node_keys)
  end)
end)

describe("node test", function()
  it("9.2 measures latency over several probes, reads version, chains and synced height", function()
    local home = cli.tempdir()
    local leader = nodes.start { args = { "--block-time", "3600" } }
    seal(leader)
    seal(leader)
    local follower = nodes.start { args = { "--follow", leader.url, "--block-time", "3600" } }
    cli.wait_for("the follower to reach height 2", function()
      local h = head(follower)
      return h and h.height == 2
    end)
    assert.equal(0, cli.run({ "node", "add", "--name", "us-east-1", "--host", "127.0.0.1", "--port",
      leader.url:match(":(%d+)$"), "--type", "validator" }, { home = home }).code)
    assert.equal(0, cli.run({ "node", "add", "f", follower.url }, { home = home }).code)
    local r = cli.run({ "node", "test", "--node", "us-east-1" }, { home = home })
    assert.equal(0, r.code, r.err)
    assert.matches("latency%s+min [%d.]+ ms · p50 [%d.]+ ms · p95 [%d.]+ ms · max [%d.]+ ms", r.out)
    assert.matches("version%s+aitbc " .. sys.version:gsub("%p", "%%%0"), r.out)
    assert.matches("ait%-devnet%s+2%s+%x+%s+synced", r.out)
    local t = cli.run({ "-o", "json", "node", "test", "f", "--probes", "7" }, { home = home }).json()
    assert.equal(7, t.probes)
    assert.equal(7, #t.latency_ms.samples)
    local l = t.latency_ms
    assert.is_true(l.min <= l.p50 and l.p50 <= l.p95 and l.p95 <= l.max)
    assert.equal("ait-devnet", t.chains[1].chain_id)
    assert.equal(2, t.chains[1].height)
    assert.equal("synced", t.chains[1].sync)
    assert.equal("us-east-1", t.chains[1].reference)
    assert.equal(sys.version, t.version)
  end)

  it("an unreachable node is a clear failure: exit 5", function()
    local home = cli.tempdir()
    local port = cli.closed_port()
    assert.equal(0, cli.run({ "node", "add", "--name", "gone", "--host", "127.0.0.1", "--port", tostring(port) },
      { home = home }).code)
    local r = cli.run({ "node", "test", "--node", "gone" }, { home = home })
    assert.equal(5, r.code)
    assert.matches("node gone %(http://127%.0%.0%.1:" .. port .. "%) is unreachable: connection refused", r.err)
    local doc = cli.run({ "-o", "json", "node", "test", "--node", "gone" }, { home = home }).json()
    assert.equal("node_unreachable", doc.error.code)
  end)

  it("something else answering is no node: exit 1; a degraded node is reported, exit 1", function()
    local home = cli.tempdir()
    local foreign, foreign_url = cli.echo_server { handler = "support.impostor_app", config = "foreign" }
    local degraded, degraded_url = cli.echo_server { handler = "support.impostor_app", config = "degraded" }
    finally(function() foreign:stop(0) degraded:stop(0) end)
    assert.equal(0, cli.run({ "node", "add", "web", foreign_url }, { home = home }).code)
    assert.equal(0, cli.run({ "node", "add", "sick", degraded_url }, { home = home }).code)
    local r = cli.run({ "-o", "json", "node", "test", "--node", "web" }, { home = home })
    assert.equal(1, r.code)
    assert.equal("not_a_node", r.json().error.code)
    assert.matches("answers, but not as an aitbc node: HTTP 404 from /health", r.json().error.message)
    r = cli.run({ "node", "test", "--node", "sick" }, { home = home })
    assert.equal(1, r.code)
    assert.matches("latency%s+min [%d.]+ ms", r.out)
    assert.matches("status%s+degraded", r.out)
    assert.matches("sick is reachable but not healthy: status degraded", r.err)
  end)

  it("a node that does not answer its first probe gets no more", function()
    local home = cli.tempdir()
    local silent, url = cli.echo_server { handler = "support.impostor_app", config = "silent" }
    finally(function() silent:stop(0) end)
    assert.equal(0, cli.run({ "node", "add", "slow", url }, { home = home }).code)
    local r = cli.run({ "-o", "json", "node", "test", "--node", "slow", "--timeout", "0.2", "--probes", "20" },
      { home = home })
    assert.equal(5, r.code)
    local e = r.json().error
    assert.equal("node_unreachable", e.code)
    assert.matches("no answer within 0%.2 s", e.message)
    assert.equal(1, e.details.probes_sent)
  end)
end)

describe("node chains", function()
  it("9.3 nodes × chains: synced, behind N, diverged, not hosted, unreachable", function()
    local home = cli.tempdir()
    -- a leader with two chains, sealed by hand
    local leader = nodes.start { args = { "--block-time", "3600", "--chains", "ait-devnet,ait-healthchain" } }
    for _ = 1, 3 do seal(leader) end
    -- a copy of the leader (same key, same blocks) that will fall behind, and one that will diverge
    local dir = leader.dir
    leader:stop()
    local function copy()
      local to = cli.tempdir()
      local p = assert(sys.spawn { argv = { "cp", "-a", dir .. "/.", to }, stdout = "null", stderr = "pipe" })
      assert.equal(0, (p:communicate(nil, 30)))
      return to
    end
    local behind_dir, fork_dir = copy(), copy()
    leader = nodes.start { data_dir = dir, args = { "--block-time", "3600", "--chains", "ait-devnet,ait-healthchain" } }
    local behind = nodes.start { data_dir = behind_dir, args = { "--block-time", "3600", "--chains",
      "ait-devnet,ait-healthchain" } }
    local fork = nodes.start { data_dir = fork_dir, args = { "--block-time", "3600", "--chains",
      "ait-devnet,ait-healthchain" } }
    seal(leader)
    seal(leader) -- leader at 5, behind at 3
    -- the fork seals its own block 4 (a faucet transfer the leader never saw), then 5: same height, another hash
    local status = fork:request("POST", "/v1/chain/ait-devnet/faucet", { key = fork.admin_key,
      json = { address = "ait1dq232xtukn4sf498e6hr489vcgpr07sqwmc725", amount = "1" } })
    assert.is_true(status >= 200 and status < 300, tostring(status))
    seal(fork)
    seal(fork)
    assert.equal(5, head(fork).height)
    assert.not_equal(head(leader).hash, head(fork).hash)
    local follower = nodes.start { args = { "--follow", leader.url, "--block-time", "3600" } }
    cli.wait_for("the follower to reach height 5", function()
      local h = head(follower)
      return h and h.height == 5
    end)
    local other = nodes.start { args = { "--block-time", "3600", "--chains", "ait-testnet" } }
    local function add(name, url)
      assert.equal(0, cli.run({ "node", "add", name, url }, { home = home }).code)
    end
    add("leader", leader.url)
    add("follower", follower.url)
    add("behind", behind.url)
    add("fork", fork.url)
    add("other", other.url)
    add("gone", "http://127.0.0.1:" .. cli.closed_port())

    local r = cli.run({ "node", "chains" }, { home = home })
    assert.equal(0, r.code, r.err)
    local lines = {}
    for line in r.out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.same({ "NODE", "ait-devnet", "ait-healthchain", "ait-testnet" }, (function()
      local t = {}
      for cell in lines[1]:gmatch("[^\t]+") do t[#t + 1] = cell end
      return t
    end)())
    local function row(name)
      for _, line in ipairs(lines) do
        local cells = {}
        for cell in line:gmatch("[^\t]+") do cells[#cells + 1] = cell end
        if cells[1] == name then return { table.unpack(cells, 2) } end
      end
    end
    assert.same({ "synced", "synced", "not hosted" }, row("leader"))
    assert.same({ "synced", "synced", "not hosted" }, row("follower")) -- it follows all its leader keeps
    assert.same({ "behind 2", "synced", "not hosted" }, row("behind"))
    assert.same({ "diverged", "synced", "not hosted" }, row("fork"))
    assert.same({ "not hosted", "not hosted", "synced" }, row("other"))
    assert.same({ "unreachable", "unreachable", "unreachable" }, row("gone"))

    local doc = cli.run({ "-o", "json", "node", "chains" }, { home = home }).json()
    local by = {}
    for _, n in ipairs(doc.nodes) do by[n.name] = n end
    assert.equal(2, by.behind.chains["ait-devnet"].behind)
    assert.equal(5, by.fork.chains["ait-devnet"].height)
    assert.is_false(by.gone.reachable)
    assert.equal("leader", doc.chains[1].reference)

    -- a head that is not on the reference's chain, below its height: diverged too
    seal(leader)
    r = cli.run({ "-o", "json", "node", "chains" }, { home = home }).json()
    for _, n in ipairs(r.nodes) do by[n.name] = n end
    assert.equal("diverged", by.fork.chains["ait-devnet"].status)
    assert.equal("behind", by.behind.chains["ait-devnet"].status)
    assert.equal(3, by.behind.chains["ait-devnet"].behind)
  end)

  it("devnet up registers its node", function()
    local home = cli.tempdir()
    local up = cli.run({ "devnet", "up", "--miners", "0", "--simulate" }, { home = home, timeout = 90 })
    finally(function() cli.run({ "devnet", "down" }, { home = home, timeout = 60 }) end)
    assert.equal(0, up.code, up.err)
    local list = cli.run({ "-o", "json", "node", "list" }, { home = home }).json().items
    assert.equal("devnet", list[1].name)
    assert.equal("validator", list[1].type)
    local url = json.decode(sys.read_file(home .. "/config.json")).url
    assert.equal(url, list[1].url)
    assert.equal(0, cli.run({ "node", "test", "--node", "devnet" }, { home = home }).code)
  end)
end)
