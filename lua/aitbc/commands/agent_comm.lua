--- aitbc agent-comm: agents talking across chains (spec §10).  An agent
-- registers in a chain's directory (signed with its own key, kept 0600
-- under AITBC_HOME/agent-keys), others discover it by chain and capability
-- with the node that hosts it and its reputation, and send it messages:
-- signed envelopes that the node relays to the chain's node, which answers
-- with a delivery receipt signed by its key, checked here.
local ac = require "aitbc.agentcomm"
local errors = require "aitbc.errors"
local keys = require "aitbc.agentcomm.keys"
local sys = require "aitbc.sys"

local function api(ctx) return require("aitbc.api").from_context(ctx, { role = "client" }) end
local function path(template, values) return require("aitbc.api").path(template, values) end

--- A usage error for an option the command needs.
local function need(o, ...)
  for _, name in ipairs { ... } do
    if o[name:gsub("-", "_")] == nil then
      errors.raise("usage", "--" .. name .. " is required", "see the command's --help", { code = "missing_option" })
    end
  end
end

local function reputation_text(r)
  if type(r) ~= "table" then return "-" end
  return string.format("%.2f (%d delivered, %d answered)", r.score, r.delivered, r.answered)
end

-- ---- register ----

local function register(ctx)
  local o = ctx.opts
  need(o, "agent-id", "capabilities")
  local caps, why = ac.capabilities(o.capabilities)
  if not caps then errors.raise("usage", "--capabilities: " .. why) end
  local client = api(ctx)
  -- the agent must be one of yours on this node (404 otherwise)
  client:call("GET", path("/v1/agents/{agent_id}", { agent_id = o.agent_id }))
  local key = keys.get(o.agent_id, true)
  local record = ac.registration(o.agent_id, o.chain_id, caps, key.id, sys.time())
  local entry = client:call("POST", "/v1/agent-comm/agents",
    { json = { record = record, signature = ac.sign(record, key.secret) }, expect = { agent_id = "string" } })
  keys.remember(o.agent_id, o.chain_id)
  entry.key_file = key.path
  return entry, function(d, out)
    out:success(string.format("agent %s registered on %s and discoverable (capabilities: %s)", d.agent_id, d.chain_id,
      table.concat(d.capabilities, ", ")))
    out:print(out:format_record({ node = d.node, public_key = d.public_key, key_file = d.key_file,
      reputation = reputation_text(d.reputation), relayed_by = d.relayed_by },
      { { "node", "hosted by node" }, { "public_key", "agent key" }, { "key_file", "key file" }, "reputation",
        { "relayed_by", "relayed by" } }))
    out:print("find it: aitbc agent-comm discover --chain-id " .. d.chain_id .. " --capability " .. d.capabilities[1])
  end
end

-- ---- discover ----

local function discover(ctx)
  local o = ctx.opts
  need(o, "chain-id")
  local res = api(ctx):call("GET", "/v1/agent-comm/agents", { query = { chain_id = o.chain_id, capability = o.capability },
    expect = { items = "array" } })
  for _, a in ipairs(res.items) do
    a.score = a.reputation and a.reputation.score
    a.capabilities_text = table.concat(a.capabilities or {}, ", ")
  end
  return res, function(d, out)
    if #d.items == 0 then
      out:print(string.format("no agent on %s%s", d.chain_id, d.capability and (" with capability " .. d.capability) or ""))
      return
    end
    local rows = {}
    for i, a in ipairs(d.items) do
      rows[i] = { agent_id = a.agent_id, capabilities = a.capabilities_text, node = a.node,
        reputation = reputation_text(a.reputation) }
    end
    out:print(string.format("%d agent(s) on %s%s, hosted by %s:", #d.items, d.chain_id,
      d.capability and (" with " .. d.capability) or "", tostring(d.node)))
    out:print(out:format_table(rows, { { "agent_id", "agent" }, "capabilities", { "node", "node address" }, "reputation" }))
  end
end

-- ---- send, reply, status ----

--- The key that signs the chain's blocks, as the node knows it (its own, or a peer's it follows).
local function chain_authority(client, chain_id)
  local chains = client:call("GET", "/v1/chains", { expect = { items = "array" } })
  for _, c in ipairs(chains.items) do
    if c.chain_id == chain_id then return c.authority or chains.authority end
  end
end

--- Waits for the delivery and checks its receipt; -> the message view, verified?, why.
local function await_receipt(client, view, env, target_chain, seconds)
  local deadline = sys.monotonic() + seconds
  while view.status == "pending" and sys.monotonic() < deadline do
    local wait = math.max(1, math.min(25, math.floor(deadline - sys.monotonic())))
    view = client:call("GET", path("/v1/agent-comm/messages/{id}", { id = view.message_id }),
      { query = { wait = wait }, timeout = wait + 15 })
  end
  if view.status ~= "delivered" then return view, false, nil end
  local ok, why = ac.check_receipt({ receipt = view.receipt, signature = view.receipt_signature }, env,
    chain_authority(client, target_chain))
  return view, ok or false, why
end

local function transmit(ctx, env, key)
  local client = api(ctx)
  local signature = ac.sign(env, key.secret)
  local view = client:call("POST", "/v1/agent-comm/messages", { json = { envelope = env, signature = signature },
    expect = { message_id = "string", status = "string" } })
  view.transmitted_to = client.url
  local status_at_send = view.status
  local verified, why
  if ctx.opts.wait > 0 then
    view, verified, why = await_receipt(client, view, env, env.target_chain, ctx.opts.wait)
  end
  view.receipt_verified, view.receipt_problem, view.status_at_send = verified, why, status_at_send
  if view.status == "delivered" and not verified then
    errors.raise("failure", "message " .. view.message_id .. " is reported delivered, but its receipt does not check "
      .. "out: " .. tostring(why), "do not trust this delivery; check the node that hosts " .. env.target_chain)
  end
  if view.status == "failed" then
    errors.raise("failure", "message " .. view.message_id .. " could not be delivered: " .. tostring(view.last_error))
  end
  return view
end

local function render_sent(d, out)
  out:success(string.format("message %s transmitted: accepted by %s for %s on %s", d.message_id, d.transmitted_to,
    d.target, d.target_chain))
  if d.status == "delivered" then
    local r = d.receipt
    out:success(string.format("delivered to %s's inbox on %s by node %s at %s", r.target, r.target_chain,
      tostring(r.node_url), r.delivered_at))
    out:print(out:format_record({ receipt = "signature verified against " .. r.node_key .. " (the key that signs "
      .. r.target_chain .. "'s blocks)", envelope = r.envelope_hash },
      { { "receipt", "delivery receipt" }, { "envelope", "envelope sha256" } }))
  else
    out:warn(string.format("not delivered yet: it waits in the outbox (attempt %s%s) and is retried until its node "
      .. "answers; follow it: aitbc agent-comm status %s", tostring(d.attempts),
      d.last_error and (", last: " .. d.last_error) or "", d.message_id))
  end
end

local function send(ctx)
  local o = ctx.opts
  need(o, "target-agent", "target-chain", "message")
  local sender, sender_chain = keys.speaker(o.agent_id, o.chain_id)
  local key = keys.get(sender, false)
  local env = ac.envelope { sender = sender, sender_chain = sender_chain, target = o.target_agent,
    target_chain = o.target_chain, message = o.message, public_key = key.id, now = sys.time(), ttl = o.ttl }
  return transmit(ctx, env, key), render_sent
end

--- The agent's inbox (a read signed with its key).
local function read_inbox(ctx, agent_id, chain_id)
  local key = keys.get(agent_id, false)
  local ts = math.floor(sys.time())
  local signature = ac.sign({ kind = "inbox_read", agent_id = agent_id, chain_id = chain_id, timestamp = ts }, key.secret)
  return api(ctx):call("GET", "/v1/agent-comm/inbox", { query = { agent_id = agent_id, chain_id = chain_id,
    timestamp = ts, signature = signature }, expect = { items = "array" } })
end

local function inbox(ctx)
  local agent_id, chain_id = keys.speaker(ctx.opts.agent_id, ctx.opts.chain_id)
  local res = read_inbox(ctx, agent_id, chain_id)
  for _, m in ipairs(res.items) do
    m.verified = ac.verify(m.envelope, m.signature, m.envelope.public_key)
  end
  return res, function(d, out)
    if #d.items == 0 then out:print("no messages for " .. d.agent_id .. " on " .. d.chain_id) return end
    local rows = {}
    for i, m in ipairs(d.items) do
      rows[i] = { id = m.message_id, from = m.sender .. "@" .. m.sender_chain, at = m.delivered_at, message = m.message,
        signed = m.verified and "verified" or "NOT VERIFIED", reply_to = m.reply_to or "" }
    end
    out:print(out:format_table(rows, { { "id", "message id" }, "from", "at", "message", "signed", { "reply_to", "reply to" } }))
  end
end

local function reply(ctx)
  local o = ctx.opts
  need(o, "message")
  local agent_id, chain_id = keys.speaker(o.agent_id, o.chain_id)
  local original
  for _, m in ipairs(read_inbox(ctx, agent_id, chain_id).items) do
    if m.message_id == ctx.args.message_id then original = m end
  end
  if not original then
    errors.raise("not_found", "no message " .. ctx.args.message_id .. " in " .. agent_id .. "'s inbox on " .. chain_id,
      "list it: aitbc agent-comm inbox --agent-id " .. agent_id)
  end
  local key = keys.get(agent_id, false)
  local env = ac.envelope { sender = agent_id, sender_chain = chain_id, target = original.sender,
    target_chain = original.sender_chain, message = o.message, public_key = key.id, now = sys.time(), ttl = o.ttl,
    reply_to = original.message_id, session = original.session }
  return transmit(ctx, env, key), render_sent
end

-- ---- listen: on_message handlers ----

--- The messages this owner's listener answered (agent-keys/<agent>.answered.json): none is answered twice.
local function answered_path(agent_id) return require("aitbc.config").home() .. "/agent-keys/" .. agent_id .. ".answered.json" end

--- Runs the agent's on_message handler as a job on one message; -> the answer text.
local function handle(ctx, client, agent_id, m)
  local job = client:call("POST", path("/v1/agents/{agent_id}/execute", { agent_id = agent_id }), { json = {
    input = m.message, message = { message_id = m.message_id, sender = m.sender, sender_chain = m.sender_chain,
      session = m.session, message = m.message } }, expect = { job_id = "string" } })
  ctx.out:info(string.format("message %s from %s@%s: handler job %s", m.message_id, m.sender, m.sender_chain, job.job_id))
  local res = require("aitbc.client").result(ctx, job.job_id, { wait = true, timeout = ctx.opts.timeout })
  local answer = type(res.result) == "table" and res.result.answer or res.result
  return type(answer) == "string" and answer or require("aitbc.json").encode(answer), job.job_id
end

--- One pass over the inbox: each unanswered message (not itself a reply:
-- replies end an exchange, so two listening agents do not answer each
-- other forever) answered by the handler's job, the answer signed and sent.
local function listen_once(ctx, client, agent_id, chain_id, done, answered)
  local json = require "aitbc.json"
  for _, m in ipairs(read_inbox(ctx, agent_id, chain_id).items) do
    if not m.reply_to and not done[m.message_id] and ac.verify(m.envelope, m.signature, m.envelope.public_key) then
      local ok, answer, job_id = pcall(handle, ctx, client, agent_id, m)
      local entry = { message_id = m.message_id, from = m.sender .. "@" .. m.sender_chain, job_id = job_id }
      if ok then
        local key = keys.get(agent_id, false)
        local env = ac.envelope { sender = agent_id, sender_chain = chain_id, target = m.sender,
          target_chain = m.sender_chain, message = answer, public_key = key.id, now = sys.time(), ttl = ctx.opts.ttl,
          reply_to = m.message_id, session = m.session }
        local sent = transmit(ctx, env, key)
        entry.reply, entry.reply_id, entry.status = answer, sent.message_id, sent.status
      else
        entry.error = errors.is(answer) and answer.message or tostring(answer)
        ctx.out:warn("message " .. m.message_id .. ": the handler failed: " .. entry.error)
      end
      done[m.message_id] = { job_id = entry.job_id, reply_id = entry.reply_id, error = entry.error }
      assert(sys.write_file(answered_path(agent_id), json.encode(done) .. "\n", tonumber("600", 8)))
      answered[#answered + 1] = entry
    end
  end
end

local function listen(ctx)
  local o = ctx.opts
  local agent_id, chain_id = keys.speaker(o.agent_id, o.chain_id)
  local client = api(ctx)
  local agent = client:call("GET", path("/v1/agents/{agent_id}", { agent_id = agent_id }),
    { expect = { definition = "object" } })
  if not agent.definition.on_message then
    errors.raise("usage", "agent " .. agent_id .. " has no on_message handler",
      "add \"on_message\": true (the agent answers) or Lua source to its definition: aitbc agent update " .. agent_id)
  end
  local done = require("aitbc.json").decode(sys.read_file(answered_path(agent_id)) or "") or {}
  local answered = require("aitbc.json").array()
  local deadline = o["for"] and sys.monotonic() + o["for"]
  if not o.once then ctx.out:info("listening for " .. agent_id .. "'s messages on " .. chain_id .. " (Ctrl-C stops)") end
  repeat
    listen_once(ctx, client, agent_id, chain_id, done, answered)
    if o.once or (deadline and sys.monotonic() >= deadline) then break end
    sys.sleep(1)
  until sys.interrupted()
  return { agent_id = agent_id, chain_id = chain_id, answered = answered }, function(d, out)
    if #d.answered == 0 then out:print("no new message for " .. d.agent_id .. " on " .. d.chain_id) return end
    for _, a in ipairs(d.answered) do
      if a.error then out:warn(string.format("%s from %s: not answered: %s", a.message_id, a.from, a.error))
      else
        out:success(string.format("%s from %s answered by job %s: reply %s %s", a.message_id, a.from, a.job_id,
          a.reply_id, a.status))
      end
    end
  end
end

local function status(ctx)
  local client = api(ctx)
  local view = client:call("GET", path("/v1/agent-comm/messages/{id}", { id = ctx.args.message_id }),
    { expect = { message_id = "string" } })
  if view.status == "delivered" and view.receipt then
    local ok, why = ac.check_receipt({ receipt = view.receipt, signature = view.receipt_signature }, view.envelope,
      chain_authority(client, view.target_chain))
    view.receipt_verified, view.receipt_problem = ok or false, why
  end
  return view, function(d, out)
    out:print(out:format_record({ message_id = d.message_id, status = d.status, from = d.sender .. "@" .. d.sender_chain,
      to = d.target .. "@" .. d.target_chain, attempts = d.attempts, last_error = d.last_error,
      next_attempt = d.next_attempt_at, delivered_at = d.delivered_at,
      receipt = d.receipt and (d.receipt_verified and ("verified, signed by " .. d.receipt.node_key)
        or ("DOES NOT VERIFY: " .. tostring(d.receipt_problem))) },
      { { "message_id", "message" }, "status", "from", "to", "attempts", { "last_error", "last error" },
        { "next_attempt", "next attempt" }, { "delivered_at", "delivered at" }, "receipt" }))
  end
end

local wait_opt = { "--wait", type = "number", min = 0, max = 3600, default = 30, metavar = "SECONDS",
  help = "wait this long for the delivery receipt (0: return once transmitted)" }
local ttl_opt = { "--ttl", type = "integer", min = 60, max = ac.MAX_TTL, default = ac.DEFAULT_TTL, metavar = "SECONDS",
  help = "the message expires (undelivered) after this long" }
local as_opts = {
  { "--agent-id", metavar = "AGENT_ID", help = "who sends (default: the agent you registered last)" },
  { "--chain-id", metavar = "CHAIN", help = "the sender's chain (default: where it registered last)" },
}
local SENT_FIELDS = { "message_id", "status", "target", "target_chain", "sender", "sender_chain", "receipt",
  "receipt_signature", "receipt_verified", "transmitted_to", "status_at_send", "attempts", "last_error", "envelope" }

return {
  name = "agent-comm",
  category = "Workflows",
  summary = "Agents across chains: register, discover, send messages with signed delivery receipts",
  commands = {
    {
      name = "register",
      summary = "Register your agent in a chain's directory (signed with the agent's own key)",
      options = {
        { "--agent-id", metavar = "AGENT_ID", help = "your agent (aitbc agent create)" },
        { "--chain-id", default = "ait-devnet", metavar = "CHAIN", help = "the chain whose directory lists it" },
        { "--capabilities", metavar = "LIST", help = "what it does, comma-separated (data-analysis)" },
      },
      examples = { [[aitbc agent-comm register --agent-id agent_1a2b --chain-id ait-devnet --capabilities "data-analysis"]] },
      id_field = "agent_id", fields = { "agent_id", "chain_id", "capabilities", "public_key", "node", "node_key",
        "reputation", "registered_at", "updated_at", "key_file", "relayed_by" },
      run = register,
    },
    {
      name = "discover",
      summary = "Agents of a chain with a capability: their node address and reputation",
      options = {
        { "--chain-id", metavar = "CHAIN", help = "the chain to search" },
        { "--capability", metavar = "NAME", help = "only agents with this capability" },
      },
      examples = { [[aitbc agent-comm discover --chain-id ait-healthchain --capability "medical-analysis"]] },
      list = "items", id_field = "agent_id",
      fields = { "agent_id", "chain_id", "capabilities", "public_key", "node", "node_key", "reputation", "registered_at" },
      run = discover,
    },
    {
      name = "send",
      summary = "Send a signed message to an agent on another chain; wait for its delivery receipt",
      options = {
        { "--target-agent", metavar = "AGENT_ID", help = "who receives it" },
        { "--target-chain", metavar = "CHAIN", help = "the chain it is registered on" },
        { "--message", metavar = "TEXT", help = "what to say" },
        as_opts[1], as_opts[2], wait_opt, ttl_opt,
      },
      examples = {
        [[aitbc agent-comm send --target-agent agent_9f8e --target-chain ait-healthchain --message "request_analysis"]] },
      id_field = "message_id", fields = SENT_FIELDS,
      run = send,
    },
    {
      name = "inbox",
      summary = "Messages delivered to your agent (read with its key)",
      options = { as_opts[1], as_opts[2] },
      list = "items", id_field = "message_id",
      fields = { "message_id", "sender", "sender_chain", "message", "delivered_at", "reply_to", "verified", "receipt" },
      run = inbox,
    },
    {
      name = "reply",
      summary = "Answer a message in your agent's inbox",
      args = { { "message_id", help = "the message to answer (aitbc agent-comm inbox)" } },
      options = { { "--message", metavar = "TEXT", help = "the answer" }, as_opts[1], as_opts[2],
        wait_opt, ttl_opt },
      id_field = "message_id", fields = SENT_FIELDS,
      run = reply,
    },
    {
      name = "listen",
      summary = "Answer your agent's messages with its on_message handler, each run as a job",
      description = "For an agent whose definition has on_message (true: the agent answers; Lua source: that "
        .. "handler, in the sandbox): each message in its inbox that is not itself a reply runs as a job of the "
        .. "agent on a miner, and its answer goes back signed with the agent's key (kept here, never sent). "
        .. "Answered messages are remembered in agent-keys/AGENT.answered.json.",
      options = { as_opts[1], as_opts[2],
        { "--once", type = "boolean", help = "answer what is in the inbox now, then stop" },
        { "--for", type = "number", min = 1, max = 86400, metavar = "SECONDS", help = "listen this long, then stop" },
        { "--timeout", type = "number", min = 1, default = 300, metavar = "SECONDS", help = "how long a handler job may take" },
        wait_opt, ttl_opt },
      list = "answered", fields = { "message_id", "from", "job_id", "reply", "reply_id", "status", "error" },
      run = listen,
    },
    {
      name = "status",
      summary = "Where a message stands: pending (in the outbox), delivered (with its receipt) or failed",
      args = { { "message_id", help = "the id send printed" } },
      id_field = "message_id",
      fields = { "message_id", "status", "attempts", "last_error", "next_attempt_at", "delivered_at", "receipt",
        "receipt_verified", "relayed_to" },
      run = status,
    },
  },
}
