--- Wallets: Ed25519 keys from a BIP-39 phrase (SLIP-0010, path PATH below),
-- their addresses (aitbc.protocol.address), and one
-- encrypted keystore file per wallet in AITBC_HOME/wallets (mode 0600):
-- Argon2id derives the key from the password, XChaCha20-Poly1305 seals the
-- phrase, with the address as associated data, so an edited file is refused.
local bip39 = require "aitbc.wallet.bip39"
local crypto = require "aitbc.crypto"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local addresses = require "aitbc.protocol.address"
local sealed = require "aitbc.secrets.sealed"
local slip10 = require "aitbc.wallet.slip10"
local sys = require "aitbc.sys"

local wallet = { PATH = "m/44'/8888'/0'/0'/0'", HRP = addresses.HRP }

-- Addresses (aitbc.protocol.address), under the names wallet code uses.
wallet.address, wallet.parse_address, wallet.normalize_address = addresses.of, addresses.parse, addresses.normalize

--- An address a user typed (a command's argument or option), in its one
-- spelling | raises a usage error naming `what`.
function wallet.address_arg(text, what)
  local address, why = wallet.normalize_address(text)
  if not address then errors.raise("usage", what .. ": not an AITBC address: " .. tostring(why)) end
  return address
end

--- Keys of a phrase: {public_key, secret_key (secret), address}
function wallet.keys(phrase)
  local seed <close> = bip39.to_seed(phrase)
  local priv = slip10.derive(seed, wallet.PATH)
  local pk, sk = crypto.sign_keypair(priv)
  return { public_key = pk, secret_key = sk, address = wallet.address(pk) }
end

function wallet.dir()
  return require("aitbc.config").home() .. "/wallets"
end

local function valid_name(name)
  if type(name) ~= "string" or not name:match("^[%w][%w_%-%.]*$") or #name > 64 then
    errors.raise("usage", "a wallet name may use letters, digits, '_', '-' and '.' (at most 64), got '" .. tostring(name) .. "'")
  end
end

function wallet.path(name)
  valid_name(name)
  return wallet.dir() .. "/" .. name .. ".json"
end

local function keystore_ad(address) return "aitbc-keystore-v1:" .. tostring(address) end

--- Seals phrase into a keystore document.
function wallet.seal(name, phrase, password)
  local keys = wallet.keys(phrase)
  return sealed.seal({
    format = "aitbc-keystore", version = 1, name = name, address = keys.address,
    public_key = crypto.hex(keys.public_key), path = wallet.PATH, created_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
  }, phrase, password, keystore_ad(keys.address))
end

--- Opens a keystore document: the phrase and keys | raises (4 on a wrong password).
function wallet.open(doc, password)
  if type(doc) ~= "table" or doc.format ~= "aitbc-keystore" or doc.version ~= 1 then
    errors.raise("failure", "not an aitbc keystore")
  end
  local phrase, refused, why = sealed.open(doc, password, keystore_ad(doc.address))
  if refused == "damaged" then errors.raise("failure", "the keystore is damaged (" .. why .. ")") end
  if not phrase then
    errors.raise("auth", "cannot open wallet " .. tostring(doc.name) .. ": wrong password, or the keystore was altered",
      "nothing was changed", { code = "keystore_refused" })
  end
  local keys = wallet.keys(phrase)
  if keys.address ~= doc.address then errors.raise("failure", "the keystore's address does not match its key") end
  keys.phrase = phrase
  return keys
end

function wallet.read(name)
  local text = sys.read_file(wallet.path(name))
  if not text then errors.raise("not_found", "no wallet named '" .. name .. "'", "see 'aitbc wallet list'") end
  local doc = json.decode(text)
  if type(doc) ~= "table" then errors.raise("failure", wallet.path(name) .. " is not a keystore") end
  return doc
end

function wallet.write(doc, overwrite)
  local path = wallet.path(doc.name)
  if not overwrite and sys.stat(path) then
    errors.raise("failure", "a wallet named '" .. doc.name .. "' already exists", "choose another --name")
  end
  assert(sys.mkdir(wallet.dir(), tonumber("700", 8)))
  local ok, err = sys.write_file(path, json.encode(doc, { pretty = true }) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. err) end
  return path
end

function wallet.names()
  local out = {}
  for _, f in ipairs(sys.list_dir(wallet.dir()) or {}) do
    local name = f:match("^(.+)%.json$")
    if name then out[#out + 1] = name end
  end
  return out
end

--- The wallet a command means: NAME if given, else the active one | raises.
function wallet.active_name(ctx, name)
  name = name or ctx.config.file.active_wallet
  if not name then errors.raise("not_found", "no wallet yet", "create one: aitbc wallet create --name NAME") end
  return name
end

--- The active wallet opened with password: its keys (wipe secret_key when done).
function wallet.unlock(ctx, password)
  return wallet.open(wallet.read(wallet.active_name(ctx)), password)
end

--- Builds and signs a transaction with an opened wallet's keys on the chain
-- of ctx.settings.chain; the nonce comes from the node.  Returns {tx, signature}.
function wallet.sign_tx(ctx, client, keys, kind, payload)
  local account = client:call("GET", require("aitbc.api").path("/v1/chain/{chain}/accounts/{address}",
    { chain = ctx.settings.chain, address = keys.address }), { expect = { nonce = "integer" } })
  local tx = { chain_id = ctx.settings.chain, type = kind, from = keys.address, public_key = crypto.hex(keys.public_key),
    nonce = account.nonce + 1, payload = payload, timestamp = os.time() }
  return require("aitbc.protocol.signing").signed_tx(tx, keys.secret_key)
end

--- Builds and signs a transaction from the active wallet, opened with
-- password.  Returns {tx, signature}, the sender's address.
function wallet.signed_tx(ctx, client, kind, payload, password)
  local keys = wallet.unlock(ctx, password)
  local ok, signed = pcall(wallet.sign_tx, ctx, client, keys, kind, payload)
  keys.secret_key:wipe()
  if not ok then error(signed, 0) end
  return signed, keys.address
end

--- Signs a transaction of kind with the active wallet (opened with
-- password) and sends it to the chain of ctx.settings.chain; with wait,
-- follows it until a block includes it (timeout seconds, default 60: then
-- a `timeout` error).  -> the node's answer {hash, status, block_height},
-- with from and chain_id.
function wallet.submit(ctx, client, kind, payload, password, wait, timeout)
  local api = require "aitbc.api"
  local function path(template, values)
    values = values or {}
    values.chain = ctx.settings.chain
    return api.path("/v1/chain/{chain}" .. template, values)
  end
  local body, from = wallet.signed_tx(ctx, client, kind, payload, password)
  local res = client:call("POST", path("/transactions"), { json = body, expect = { hash = "id", status = "string" } })
  res.from, res.chain_id = from, ctx.settings.chain
  if not wait then return res end
  local deadline = sys.monotonic() + (timeout or 60)
  while true do
    local t = client:call("GET", path("/transactions/{hash}", { hash = res.hash }),
      { expect = { status = "string", block_height = "integer?" } })
    if t.status == "included" then
      res.status, res.block_height = t.status, t.block_height
      return res
    end
    if sys.monotonic() > deadline then
      errors.raise("timeout", "transaction " .. res.hash .. " is not in a block after " .. (timeout or 60) .. " s",
        "follow it with 'aitbc wait tx " .. res.hash .. "'")
    end
    sys.sleep(0.2)
  end
end

--- The active wallet of a process that runs unattended (a devnet's miner,
-- whose payments go to it): created once in home (that process's
-- AITBC_HOME) with a random password kept beside it in home/NAME.password
-- (0600), for whoever spends from it:
--   AITBC_HOME=home aitbc wallet send ADDRESS 5 --password-file home/NAME.password
-- Returns its address (the existing wallet's, when there is one).
function wallet.ensure_unattended(home, name)
  valid_name(name)
  local path = home .. "/wallets/" .. name .. ".json"
  local existing = sys.read_file(path)
  local doc = existing and json.decode(existing)
  if type(doc) ~= "table" then
    local password = crypto.hex(crypto.random(16))
    doc = wallet.seal(name, bip39.generate(24), password)
    assert(sys.mkdir(home .. "/wallets", tonumber("700", 8)))
    assert(sys.write_file(home .. "/" .. name .. ".password", password .. "\n", tonumber("600", 8)))
    assert(sys.write_file(path, json.encode(doc, { pretty = true }) .. "\n", tonumber("600", 8)))
  end
  local config = require "aitbc.config"
  local file = assert(config.read_file(home .. "/config.json"))
  file.active_wallet = name
  assert(config.write_file(home .. "/config.json", file))
  return doc.address
end

--- The active wallet's address, or nil (for defaults such as a payout address).
function wallet.active_address(ctx)
  local name = ctx.config.file.active_wallet
  local text = name and sys.read_file(wallet.path(name))
  local doc = text and json.decode(text)
  return type(doc) == "table" and doc.address or nil
end

return wallet
