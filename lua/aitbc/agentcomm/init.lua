--- Agent messages across chains (DESIGN.md §9), what the CLI and the nodes
-- compute alike: an agent's registration in a chain's directory, message
-- envelopes (signed by the sending agent's Ed25519 key) and delivery
-- receipts (signed by the key of the node that hosts the target chain).
-- Everything is signed over the SHA-256 of its canonical JSON
-- (aitbc.protocol.signing); keys travel as base64url.
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local signing = require "aitbc.protocol.signing"

local M = { VERSION = 1, MAX_MESSAGE = 16 * 1024, MAX_TTL = 7 * 86400, DEFAULT_TTL = 86400, CLOCK_SKEW = 300,
  MAX_CAPABILITIES = 32 }

local function public_of(b64)
  local pk = type(b64) == "string" and crypto.unbase64(b64, "urlsafe")
  return pk and #pk == 32 and pk or nil
end
M.public_of = public_of

function M.hash(obj) return signing.hash(obj) end
function M.sign(obj, secret) return signing.sign(signing.hash(obj), secret) end

--- Does signature over obj verify with the base64url public key?
function M.verify(obj, signature, public_b64)
  local pk = public_of(public_b64)
  return pk ~= nil and signing.verify(signature, signing.hash(obj), pk)
end

--- "data-analysis, nlp" or a list -> sorted, lower-case, unique list | nil, why.
function M.capabilities(value)
  local list = {}
  if type(value) == "string" then
    for c in value:gmatch("[^,%s]+") do list[#list + 1] = c end
  elseif type(value) == "table" then
    for _, c in ipairs(value) do list[#list + 1] = c end
  end
  local seen, out = {}, json.array()
  for _, c in ipairs(list) do
    if type(c) ~= "string" or not c:match("^[%w][%w_%-%.]*$") or #c > 64 then
      return nil, "each capability is a word of letters, digits, _ - . (at most 64), e.g. data-analysis"
    end
    c = c:lower()
    if not seen[c] then seen[c], out[#out + 1] = true, c end
  end
  if #out == 0 then return nil, "name at least one capability, e.g. data-analysis" end
  if #out > M.MAX_CAPABILITIES then return nil, "at most " .. M.MAX_CAPABILITIES .. " capabilities" end
  table.sort(out)
  return out
end

--- The registration an agent signs: {kind, agent_id, chain_id, capabilities, public_key, timestamp}.
function M.registration(agent_id, chain_id, capabilities, public_b64, now)
  return { kind = "agent_registration", agent_id = agent_id, chain_id = chain_id, capabilities = capabilities,
    public_key = public_b64, timestamp = math.floor(now) }
end

--- An envelope: who sends to whom, the message, when it expires, a nonce.
-- opts: {sender, sender_chain, target, target_chain, message, public_key, now, ttl, reply_to, session}
function M.envelope(o)
  return { version = M.VERSION, sender = o.sender, sender_chain = o.sender_chain, target = o.target,
    target_chain = o.target_chain, payload = { message = o.message }, public_key = o.public_key,
    timestamp = math.floor(o.now), expires = math.floor(o.now) + (o.ttl or M.DEFAULT_TTL),
    nonce = crypto.hex(crypto.random(12)), reply_to = o.reply_to, session = o.session or crypto.hex(crypto.random(8)) }
end

--- A message's id: from its envelope's hash (so a replay has the same id).
function M.message_id(envelope) return "msg_" .. signing.hash(envelope):sub(1, 32) end

local ENVELOPE_FIELDS = { version = true, sender = true, sender_chain = true, target = true, target_chain = true,
  payload = true, public_key = true, timestamp = true, expires = true, nonce = true, reply_to = true, session = true }

local function id_ok(v) return type(v) == "string" and #v <= 128 and v:match("^[%w][%w_%-%.]*$") ~= nil end

--- Checks an envelope on its own (fields, signature, time); -> true | nil, field, why.
function M.check_envelope(env, signature, now)
  if type(env) ~= "table" then return nil, "envelope", "must be an object" end
  for k in pairs(env) do
    if not ENVELOPE_FIELDS[k] then return nil, "envelope." .. tostring(k), "is not an envelope field" end
  end
  if env.version ~= M.VERSION then return nil, "envelope.version", "must be " .. M.VERSION end
  for _, f in ipairs { "sender", "sender_chain", "target", "target_chain" } do
    if not id_ok(env[f]) then return nil, "envelope." .. f, "must be an id (letters, digits, _ - .)" end
  end
  if type(env.payload) ~= "table" or type(env.payload.message) ~= "string" or #env.payload.message == 0
    or #env.payload.message > M.MAX_MESSAGE then
    return nil, "envelope.payload.message", "must be text of 1 to " .. M.MAX_MESSAGE .. " bytes"
  end
  if not public_of(env.public_key) then return nil, "envelope.public_key", "must be an Ed25519 key (base64url)" end
  if type(env.nonce) ~= "string" or #env.nonce < 16 or #env.nonce > 64 then
    return nil, "envelope.nonce", "must be 16 to 64 characters"
  end
  if math.type(env.timestamp) ~= "integer" or math.type(env.expires) ~= "integer" then
    return nil, "envelope.timestamp", "timestamp and expires must be whole Unix seconds"
  end
  if env.timestamp > now + M.CLOCK_SKEW then return nil, "envelope.timestamp", "is in the future" end
  if env.expires <= now then return nil, "envelope.expires", "has passed: the message expired" end
  if env.expires - env.timestamp > M.MAX_TTL then return nil, "envelope.expires", "is too far ahead (at most 7 days)" end
  if env.reply_to ~= nil and not id_ok(env.reply_to) then return nil, "envelope.reply_to", "must be a message id" end
  if env.session ~= nil and not id_ok(env.session) then return nil, "envelope.session", "must be an id" end
  if not M.verify(env, signature, env.public_key) then
    return nil, "signature", "does not verify with the envelope's public key: a forged or altered envelope"
  end
  return true
end

--- The receipt the target's node signs once the message is in the inbox.
function M.receipt(env, message_id, node_key_id, node_url, now)
  return { kind = "delivery_receipt", message_id = message_id, envelope_hash = signing.hash(env), sender = env.sender,
    target = env.target, target_chain = env.target_chain, delivered_at = require("aitbc.timefmt").iso(now),
    node_key = node_key_id, node_url = node_url }
end

--- Does a receipt {receipt, signature} prove the delivery of env by the
-- node whose key is authority (base64url)?  -> true | nil, why
function M.check_receipt(r, env, authority)
  if type(r) ~= "table" or type(r.receipt) ~= "table" then return nil, "no receipt" end
  local rc = r.receipt
  if rc.kind ~= "delivery_receipt" or rc.message_id ~= M.message_id(env) or rc.envelope_hash ~= signing.hash(env) then
    return nil, "the receipt is for another message"
  end
  if authority and rc.node_key ~= authority then return nil, "the receipt is signed by another node than the chain's host" end
  if not M.verify(rc, r.signature, rc.node_key) then return nil, "the receipt's signature does not verify" end
  return true
end

return M
