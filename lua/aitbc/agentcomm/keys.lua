--- The agents' own Ed25519 keys, kept by their owner (DESIGN.md §9):
-- AITBC_HOME/agent-keys/<agent_id>.key (a hex seed, mode 0600), made at
-- `agent create` (or at `agent-comm register` for agents made before); and which chains each agent is
-- registered on (agent-keys/registered.json), so that `send` and `inbox`
-- know who speaks when no --agent-id is given (the last registered).
local crypto = require "aitbc.crypto"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

local function dir() return require("aitbc.config").home() .. "/agent-keys" end

local function check_id(agent_id)
  if type(agent_id) ~= "string" or not agent_id:match("^[%w][%w_%-%.]*$") or #agent_id > 128 then
    errors.raise("usage", "--agent-id must be an agent id like agent_1a2b3c (letters, digits, _ - .)")
  end
end

--- The agent's key {public, secret, id (base64url public)}; made (0600) when create and there is none.
function M.get(agent_id, create)
  check_id(agent_id)
  local path = dir() .. "/" .. agent_id .. ".key"
  local text = sys.read_file(path)
  if not text then
    if not create then
      errors.raise("not_found", "no key for agent " .. agent_id .. " in " .. dir(),
        "register it first: aitbc agent-comm register --agent-id " .. agent_id .. " --chain-id ait-devnet --capabilities ...")
    end
    assert(sys.mkdir(require("aitbc.config").home(), tonumber("700", 8)))
    assert(sys.mkdir(dir(), tonumber("700", 8)))
    text = crypto.hex(crypto.random(32))
    local ok, err = sys.write_file(path, text .. "\n", tonumber("600", 8))
    if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. tostring(err)) end
  end
  local seed = crypto.unhex((text:match("^%s*(%x+)")) or "")
  if not seed or #seed ~= 32 then errors.raise("failure", path .. " is not an agent key (64 hex digits)") end
  local public, secret = crypto.sign_keypair(seed)
  return { public = public, secret = secret, id = crypto.base64(public, "urlsafe"), path = path }
end

local function registry_path() return dir() .. "/registered.json" end

local function read_registry()
  local r = json.decode(sys.read_file(registry_path()) or "") or {}
  r.agents = r.agents or {}
  return r
end

--- Remembers that agent_id is registered on chain_id (the newest is the default sender).
function M.remember(agent_id, chain_id)
  local r = read_registry()
  r.agents[agent_id] = r.agents[agent_id] or {}
  r.agents[agent_id][chain_id] = os.date("!%Y-%m-%dT%H:%M:%SZ")
  r.last = { agent_id = agent_id, chain_id = chain_id }
  local ok, err = sys.write_file(registry_path(), json.encode(r, { pretty = true }) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. registry_path() .. ": " .. tostring(err)) end
end

--- Who speaks: agent_id (given or the last registered) and its chain (given, or where it registered last).
function M.speaker(agent_id, chain_id)
  local r = read_registry()
  agent_id = agent_id or (r.last and r.last.agent_id)
  if not agent_id then
    errors.raise("usage", "no agent of yours is registered yet: name one with --agent-id",
      "aitbc agent-comm register --agent-id AGENT --chain-id ait-devnet --capabilities data-analysis")
  end
  if not chain_id then
    local chains = r.agents[agent_id] or {}
    if r.last and r.last.agent_id == agent_id then chain_id = r.last.chain_id end
    local newest
    for c, at in pairs(chains) do if not chain_id and (not newest or at > newest) then chain_id, newest = c, at end end
  end
  if not chain_id then
    errors.raise("usage", "agent " .. agent_id .. " is not registered on any chain from here: give --chain-id",
      "aitbc agent-comm register --agent-id " .. agent_id .. " --chain-id ait-devnet --capabilities ...")
  end
  return agent_id, chain_id
end

return M
