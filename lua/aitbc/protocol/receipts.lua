--- Receipts: the node's signed proof that a miner completed a job, which
-- a client checks against the node's key (aitbc client result).  The
-- signature is Ed25519 over the canonical JSON (sorted keys, no spaces) of
-- the receipt without its `signature` field.  What a receipt holds is the
-- node's to fill in (aitbc.node.receipts).
local crypto = require "aitbc.crypto"
local signing = require "aitbc.protocol.signing"

local receipts = {}

--- Signs receipt in place with the node's key; returns it.
function receipts.sign(receipt, public_key, secret_key)
  receipt.signature = nil
  local sig = crypto.sign(signing.canonical(receipt), secret_key)
  receipt.signature = {
    alg = "Ed25519",
    key_id = crypto.base64(public_key, "urlsafe"),
    sig = crypto.base64(sig, "urlsafe"),
  }
  return receipt
end

--- verify(receipt, public_key) -> true | nil, reason
function receipts.verify(receipt, public_key)
  local s = type(receipt) == "table" and receipt.signature
  if type(s) ~= "table" or s.alg ~= "Ed25519" then return nil, "receipt has no Ed25519 signature" end
  local sig = crypto.unbase64(s.sig or "", "urlsafe")
  if not sig then return nil, "signature is not base64url" end
  if public_key and s.key_id ~= crypto.base64(public_key, "urlsafe") then
    return nil, "signed by another key than the node's"
  end
  local key = public_key or crypto.unbase64(s.key_id or "", "urlsafe")
  local copy = {}
  for k, v in pairs(receipt) do copy[k] = v end
  copy.signature = nil
  return crypto.verify(sig, signing.canonical(copy), key or "")
end

return receipts
