--- What transactions and blocks are signed over, as every node and client
-- must compute it alike: the canonical JSON of an object (sorted keys, no
-- spaces: aitbc.json), its SHA-256 in hex, and an Ed25519 signature over
-- that hash in unpadded base64url.
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"

local signing = {}

--- The canonical text of a JSON value.
signing.canonical = json.encode

--- SHA-256 (hex) of the canonical JSON of obj: a transaction's or block's hash.
function signing.hash(obj) return crypto.hex(crypto.sha256(json.encode(obj))) end

--- A signature over a hash, as blocks and transactions carry it.
function signing.sign(hash, secret) return crypto.base64(crypto.sign(hash, secret), "urlsafe") end

--- verify(signature, hash, public_key) -> true | false (a malformed signature is false).
function signing.verify(signature, hash, public_key)
  local sig = type(signature) == "string" and crypto.unbase64(signature, "urlsafe")
  return sig and crypto.verify(sig, hash, public_key) or false
end

--- A transaction signed with secret: {tx, signature}, as the node takes it.
function signing.signed_tx(tx, secret)
  return { tx = tx, signature = signing.sign(signing.hash(tx), secret) }
end

return signing
