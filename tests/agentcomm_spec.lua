-- Agents across chains (spec §10, DESIGN.md §9) through two real peer nodes
-- on loopback: node 1 hosts ait-devnet, node 2 ait-healthchain, each
-- following the other's chain.  Registration relayed to the chain's node,
-- discovery across peers, a message delivered with a receipt signed by the
-- target chain's node, store-and-forward across a stop and restart of that
-- node (delivered once), and forged and replayed envelopes refused.
local ac = require "aitbc.agentcomm"
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local nodes = require "support.node"
local sys = require "aitbc.sys"

describe("agent-comm across two peer nodes", function()
  local n1, n2, n2_dir, n2_port, home, env
  local a1, a2

  local function run(args, timeout) return n1:cli(args, { home = home, env = env, timeout = timeout or 60 }) end
  -- the other tests send as the agent registered last: analyst on ait-devnet
  local function restore_sender()
    assert.equal(0, run({ "agent-comm", "register", "--agent-id", a1, "--chain-id", "ait-devnet", "--capabilities",
      "data-analysis" }).code)
  end

  local function start_n2()
    n2 = nodes.start { data_dir = n2_dir, args = { "--chains", "ait-healthchain", "--peer", n1.url, "--block-time", "0.2",
      "--log-level", "warn", n2_port and "--listen" or nil, n2_port and ("127.0.0.1:" .. n2_port) or nil } }
  end

  setup(function()
    n1 = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    n2_dir = cli.tempdir()
    start_n2()
    n2_port = n2.url:match(":(%d+)$")
    assert.equal(201, (n1:request("POST", "/v1/admin/peers", { key = n1.admin_key, json = { url = n2.url } })))
    cli.wait_for("each node to follow the other's chain", function()
      local _, c1 = n1:request("GET", "/v1/chains")
      local _, c2 = n2:request("GET", "/v1/chains")
      return #c1.items == 2 and #c2.items == 2 and c1.items[2].height and c2.items[2].height
    end, 20)
    home = cli.tempdir()
    env = { AITBC_CLIENT_KEY = (n1:key("client")) }
    local function agent(name)
      local r = run { "-q", "agent", "create", "--name", name, "--type", "chat", "--model", "llama3" }
      assert.equal(0, r.code, r.err)
      return (r.out:gsub("%s+$", ""))
    end
    a1, a2 = agent("analyst"), agent("medic")
    local r = run { "agent-comm", "register", "--agent-id", a2, "--chain-id", "ait-healthchain", "--capabilities",
      "medical-analysis" }
    assert.equal(0, r.code, r.err)
    r = run { "agent-comm", "register", "--agent-id", a1, "--chain-id", "ait-devnet", "--capabilities", "data-analysis" }
    assert.equal(0, r.code, r.err)
  end)
  teardown(function() if n2 then n2:stop() end n1:stop() cli.cleanup() end)

  it("the other chain's agents are discovered with the node that hosts them and their reputation", function()
    local r = run { "-o", "json", "agent-comm", "discover", "--chain-id", "ait-healthchain", "--capability",
      "medical-analysis" }
    assert.equal(0, r.code, r.err)
    local items = r.json().items
    assert.equal(1, #items)
    assert.equal(a2, items[1].agent_id)
    assert.equal(n2.url, items[1].node)
    assert.is_number(items[1].reputation.score)
    -- the registration is in node 2's directory, not node 1's
    local status = n1:request("GET", "/v1/agent-comm/chains/ait-devnet/agents/" .. a2)
    assert.equal(404, status)
    r = run { "agent-comm", "discover", "--chain-id", "ait-healthchain", "--capability", "data-analysis" }
    assert.equal(0, r.code)
    assert.matches("no agent on ait%-healthchain", r.out)
  end)

  it("an agent's Ed25519 key is made at agent create, 0600, and registration signs with it", function()
    local r = run { "-o", "json", "agent", "create", "--name", "keyed", "--type", "chat", "--model", "llama3" }
    assert.equal(0, r.code, r.err)
    local made = r.json()
    assert.equal(home .. "/agent-keys/" .. made.agent_id .. ".key", made.key_file)
    assert.equal(tonumber("600", 8), sys.stat(made.key_file).mode & tonumber("777", 8))
    assert.equal(43, #made.public_key)
    r = run { "-o", "json", "agent-comm", "register", "--agent-id", made.agent_id, "--chain-id", "ait-devnet",
      "--capabilities", "keys" }
    assert.equal(0, r.code, r.err)
    assert.equal(made.public_key, r.json().public_key)
    -- an agent made before keys came with create: register still makes its key
    r = run { "-o", "json", "agent", "create", "--name", "older", "--type", "chat", "--model", "llama3" }
    local older = r.json()
    assert(os.remove(older.key_file))
    r = run { "-o", "json", "agent-comm", "register", "--agent-id", older.agent_id, "--chain-id", "ait-devnet",
      "--capabilities", "keys" }
    assert.equal(0, r.code, r.err)
    assert.truthy(sys.stat(older.key_file))
    assert.are_not.equal(older.public_key, r.json().public_key)
    -- and the text output names the key
    r = run { "agent", "create", "--name", "shown", "--type", "chat", "--model", "llama3" }
    assert.matches("agent key%s+[%w_-]+\n", r.out)
    assert.matches("key file%s+.-agent%-keys/agent_%x+%.key %(yours only: mode 0600%)", r.out)
    restore_sender()
  end)

  it("an agent with an on_message handler answers a message: the handler runs as a job, the reply comes back", function()
    local url
    local sim
    sim, url = cli.echo_server { handler = "aitbc.ollama.sim", config = '{"token_delay": 0}' }
    assert(cli.spawn { argv = { cli.bin, "--url", n1.url, "miner", "mine-ollama", "--model", "llama3", "--continuous",
      "--miner-id", "listener-rig", "--ollama-url", url, "--poll-wait", "2", "--allow-custom-workflows" },
      env = { AITBC_HOME = cli.tempdir(), AITBC_MINER_KEY = n1:key("miner") }, stdout = "null", stderr = "null" })
    assert(sys.write_file(home .. "/responder.json", require("aitbc.json").encode { name = "responder", type = "chat",
      model = "llama3", on_message = "return function(req) return 'ack ' .. req.message.message .. ' from ' "
        .. ".. req.message.sender .. ' (' .. req.input .. ')' end" }))
    local r = run { "-q", "agent", "create", "--config", home .. "/responder.json" }
    assert.equal(0, r.code, r.err)
    local responder = r.out:gsub("%s+$", "")
    assert.equal(0, run({ "agent-comm", "register", "--agent-id", responder, "--chain-id", "ait-healthchain",
      "--capabilities", "answers" }).code)
    r = run { "-o", "json", "agent-comm", "send", "--agent-id", a1, "--chain-id", "ait-devnet", "--target-agent", responder,
      "--target-chain", "ait-healthchain", "--message", "ping" }
    assert.equal(0, r.code, r.err)
    local asked = r.json().message_id
    r = run({ "-o", "json", "agent-comm", "listen", "--agent-id", responder, "--chain-id", "ait-healthchain", "--once" }, 90)
    assert.equal(0, r.code, r.err)
    local answered = r.json().answered
    assert.equal(1, #answered)
    assert.equal(asked, answered[1].message_id)
    assert.equal("ack ping from " .. a1 .. " (ping)", answered[1].reply)
    assert.equal("delivered", answered[1].status)
    local job = run({ "-o", "json", "client", "status", answered[1].job_id }).json()
    assert.equal("COMPLETED", job.state)
    assert.equal("listener-rig", job.assigned_miner_id)
    -- the reply, signed by the responder's key, is in the sender's inbox
    r = run { "-o", "json", "agent-comm", "inbox", "--agent-id", a1, "--chain-id", "ait-devnet" }
    local reply
    for _, m in ipairs(r.json().items) do if m.reply_to == asked then reply = m end end
    assert.truthy(reply)
    assert.equal(responder, reply.sender)
    assert.is_true(reply.verified)
    -- answered once: a second pass finds nothing new
    r = run { "agent-comm", "listen", "--agent-id", responder, "--chain-id", "ait-healthchain", "--once" }
    assert.equal(0, r.code, r.err)
    assert.matches("no new message for " .. responder, r.out)
    -- an agent without a handler is told how to get one
    r = run { "agent-comm", "listen", "--agent-id", a2, "--chain-id", "ait-healthchain", "--once" }
    assert.equal(2, r.code)
    assert.matches("has no on_message handler", r.err)
    sim:stop(1)
    restore_sender()
  end)

  it("a message is transmitted, delivered and its receipt verified against the target chain's node key", function()
    local r = run { "-o", "json", "agent-comm", "send", "--target-agent", a2, "--target-chain", "ait-healthchain",
      "--message", "request_analysis" }
    assert.equal(0, r.code, r.err)
    local d = r.json()
    assert.equal("delivered", d.status)
    assert.is_true(d.receipt_verified)
    local _, chains = n2:request("GET", "/v1/chains")
    assert.equal(chains.this_node_key, d.receipt.node_key)
    r = run { "-o", "json", "agent-comm", "inbox", "--agent-id", a2 }
    assert.equal(0, r.code, r.err)
    local found
    for _, m in ipairs(r.json().items) do if m.message_id == d.message_id then found = m end end
    assert.equal("request_analysis", found.message)
    assert.is_true(found.verified)
  end)

  it("refuses a replayed envelope and a forged one", function()
    local key = assert(sys.read_file(home .. "/agent-keys/" .. a1 .. ".key")):match("%x+")
    local public, secret = crypto.sign_keypair(crypto.unhex(key))
    local env1 = ac.envelope { sender = a1, sender_chain = "ait-devnet", target = a2, target_chain = "ait-healthchain",
      message = "once", public_key = crypto.base64(public, "urlsafe"), now = sys.time() }
    local body = { envelope = env1, signature = ac.sign(env1, secret) }
    local status, d = n1:request("POST", "/v1/agent-comm/messages", { key = env.AITBC_CLIENT_KEY, json = body })
    assert.equal(202, status)
    assert.equal("delivered", d.status, d.last_error)
    -- the same envelope again: to the sender's node, and straight to the target's
    status, d = n1:request("POST", "/v1/agent-comm/messages", { key = env.AITBC_CLIENT_KEY, json = body })
    assert.equal(409, status)
    assert.equal("replayed", d.error.code)
    status, d = n2:request("POST", "/v1/agent-comm/relay", { json = body })
    assert.equal(409, status)
    assert.equal("replayed", d.error.code)
    -- altered after signing
    local altered = ac.envelope { sender = a1, sender_chain = "ait-devnet", target = a2, target_chain = "ait-healthchain",
      message = "original", public_key = crypto.base64(public, "urlsafe"), now = sys.time() }
    local sig = ac.sign(altered, secret)
    altered.payload.message = "altered"
    status, d = n2:request("POST", "/v1/agent-comm/relay", { json = { envelope = altered, signature = sig } })
    assert.equal(400, status)
    assert.equal("bad_signature", d.error.code)
    -- signed with another key than a1's registered one
    local fake_public, fake_secret = crypto.sign_keypair(crypto.random(32))
    local forged = ac.envelope { sender = a1, sender_chain = "ait-devnet", target = a2, target_chain = "ait-healthchain",
      message = "trust me", public_key = crypto.base64(fake_public, "urlsafe"), now = sys.time() }
    status, d = n2:request("POST", "/v1/agent-comm/relay", { json = { envelope = forged, signature = ac.sign(forged, fake_secret) } })
    assert.equal(403, status)
    assert.equal("forged_sender", d.error.code)
  end)

  -- last: the node 2 it restarts is stopped when this test ends
  it("waits in the outbox while the target's node is down and is delivered once when it returns", function()
    n2:stop()
    local r = run { "-o", "json", "agent-comm", "send", "--target-agent", a2, "--target-chain", "ait-healthchain",
      "--message", "while you were away", "--wait", "0" }
    assert.equal(0, r.code, r.err)
    local id = r.json().message_id
    assert.equal("pending", r.json().status)
    r = run { "-o", "json", "agent-comm", "status", id }
    assert.equal("pending", r.json().status)
    start_n2()
    cli.wait_for("the outbox to deliver", function()
      local _, m = n1:request("GET", "/v1/agent-comm/messages/" .. id .. "?wait=5", { timeout = 15 })
      return m.status == "delivered"
    end, 60)
    r = run { "-o", "json", "agent-comm", "status", id }
    assert.is_true(r.json().receipt_verified)
    r = run { "-o", "json", "agent-comm", "inbox", "--agent-id", a2 }
    local copies = 0
    for _, m in ipairs(r.json().items) do if m.message_id == id then copies = copies + 1 end end
    assert.equal(1, copies)
  end)
end)
