--- Sealed files: a secret encrypted under a password, as wallet keystores
-- and API key backups keep theirs.  Argon2id (libsodium's crypto_pwhash)
-- derives the key from the password and a random salt; XChaCha20-Poly1305
-- seals the secret with associated data naming what the file is, so a file
-- with one byte changed, or moved into another's place, is refused.  The
-- fields sit in the file's JSON document beside its own:
--   kdf = {alg = "argon2id13", salt, ops, mem}, cipher, nonce, ciphertext
local crypto = require "aitbc.crypto"

local sealed = { KDF = { ops = 3, mem = 64 * 1024 * 1024 }, CIPHER = "xchacha20poly1305-ietf" }

--- Adds the sealed fields to doc and returns it.  kdf: {ops, mem}, default KDF.
function sealed.seal(doc, secret, password, ad, kdf)
  kdf = kdf or sealed.KDF
  local salt, nonce = crypto.random(crypto.SALT_BYTES), crypto.random(crypto.AEAD_NONCE_BYTES)
  local key <close> = assert(crypto.argon2id(password, salt, kdf))
  doc.kdf = { alg = "argon2id13", salt = crypto.base64(salt), ops = kdf.ops, mem = kdf.mem }
  doc.cipher = sealed.CIPHER
  doc.nonce = crypto.base64(nonce)
  doc.ciphertext = crypto.base64(crypto.aead_encrypt(secret, key, nonce, ad))
  return doc
end

--- The salt, nonce, ciphertext and parameters of doc | nil, what is wrong.
local function read(doc)
  local kdf = type(doc) == "table" and type(doc.kdf) == "table" and doc.kdf or {}
  local salt = type(kdf.salt) == "string" and crypto.unbase64(kdf.salt)
  local nonce = type(doc.nonce) == "string" and crypto.unbase64(doc.nonce)
  local ct = type(doc.ciphertext) == "string" and crypto.unbase64(doc.ciphertext)
  if not salt or #salt ~= crypto.SALT_BYTES or not nonce or #nonce ~= crypto.AEAD_NONCE_BYTES or not ct then
    return nil, "bad salt, nonce or ciphertext"
  end
  local ops, mem = math.tointeger(kdf.ops), math.tointeger(kdf.mem)
  if not ops or not mem or ops < 1 or ops > 20 or mem < 8192 or mem > (1 << 30) then
    return nil, "implausible key-derivation parameters"
  end
  return { salt = salt, nonce = nonce, ciphertext = ct, kdf = { ops = ops, mem = mem } }
end

--- check(doc) -> true | nil, what is damaged (before asking for a password).
function sealed.check(doc)
  local parts, why = read(doc)
  if not parts then return nil, why end
  return true
end

--- open(doc, password, ad) -> secret | nil, "damaged", what | nil, "refused"
-- (a wrong password, or the file or its associated data altered).
function sealed.open(doc, password, ad)
  local parts, why = read(doc)
  if not parts then return nil, "damaged", why end
  local key <close> = assert(crypto.argon2id(password, parts.salt, parts.kdf))
  local secret = crypto.aead_decrypt(parts.ciphertext, key, parts.nonce, ad)
  if not secret then return nil, "refused" end
  return secret
end

return sealed
