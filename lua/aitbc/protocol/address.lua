--- Account addresses: bech32 (BIP-173) with prefix "ait" over BLAKE2b-160
-- of an Ed25519 public key ("ait1…").  The node checks every address a
-- transaction names with these, and wallets derive theirs with them.
local bech32 = require "aitbc.protocol.bech32"
local crypto = require "aitbc.crypto"

local address = { HRP = "ait" }

-- Both are pure, and a node sees the same accounts again and again: the
-- answers are remembered (bounded; the memo is dropped when full).
local memo_address, memo_parsed, memo_size = {}, {}, 0
local function remember()
  memo_size = memo_size + 1
  if memo_size > 50000 then memo_address, memo_parsed, memo_size = {}, {}, 0 end
end

--- The address of a public key.
function address.of(public_key)
  local a = memo_address[public_key]
  if not a then
    a = bech32.encode(address.HRP, bech32.bytes_to_words(crypto.blake2b(public_key, 20)))
    memo_address[public_key] = a
    remember()
  end
  return a
end

--- parse(text) -> 20-byte hash | nil, reason.  Upper-case text parses too
-- (BIP-173); to name an account use normalize.
function address.parse(text)
  local known = memo_parsed[text]
  if known then return known end
  local hrp, words = bech32.decode(text)
  if not hrp then return nil, words end
  if hrp ~= address.HRP then return nil, "not an AITBC address (prefix '" .. hrp .. "', expected 'ait')" end
  local bytes, err = bech32.words_to_bytes(words)
  if not bytes or #bytes ~= 20 then return nil, err or "wrong length" end
  memo_parsed[text] = bytes
  remember()
  return bytes
end

--- The one spelling of an address: BIP-173 lets an address be written all
-- in upper case (the same address) and forbids mixing cases, so every
-- address read from outside goes through here before it names an account.
-- normalize(text) -> lower-case address | nil, reason
function address.normalize(text)
  if type(text) ~= "string" then return nil, "not a string" end
  if text:lower() ~= text and text:upper() ~= text then
    return nil, "mixes upper and lower case (BIP-173 forbids it); write the address all in lower case"
  end
  local lower = text:lower()
  local ok, why = address.parse(lower)
  if not ok then return nil, why end
  return lower
end

return address
