---@meta aitbc.native.crypto
-- Type stubs (LuaLS) for runtime/crypto.c.  Key arguments accept a string or a secret.
local crypto = {}
crypto.AEAD_NONCE_BYTES = 24
crypto.SALT_BYTES = 16

---@class aitbc.secret  Bytes wiped on :wipe(), on scope exit (<close>) and at collection.
local secret = {}
function secret:wipe() end
---@return integer
function secret:len() end
---@return string bytes  a copy; only for code that needs a string
function secret:reveal() end

---@param size_or_bytes integer|string|aitbc.secret  random secret of that size, or a copy
---@return aitbc.secret
function crypto.secret(size_or_bytes) end
---@param n integer @return string
function crypto.random(n) end
---@return string digest32
function crypto.sha256(data) end
---@return string digest64
function crypto.sha512(data) end
---@class aitbc.sha256
---@field update fun(self, data: string): aitbc.sha256
---@field final fun(self): string  the digest; the hasher starts over
---@param mode? "portable"  without the CPU's SHA extensions (tests)
---@return aitbc.sha256
function crypto.sha256_stream(mode) end
---@param len? integer 16..64 (default 32) @param key? string|aitbc.secret
---@return string
function crypto.blake2b(data, len, key) end
---@return string mac32
function crypto.hmac_sha256(key, data) end
---@return string mac64
function crypto.hmac_sha512(key, data) end
---@param seed? string|aitbc.secret  32 bytes; random when nil
---@return string public_key, aitbc.secret secret_key64
function crypto.sign_keypair(seed) end
---@return string signature64
function crypto.sign(message, secret_key) end
---@return true|nil ok, string? reason
function crypto.verify(signature, message, public_key) end
---@return string public_key
function crypto.sign_public_key(secret_key) end
---@param opts? {ops?: integer, mem?: integer, len?: integer}
---@return aitbc.secret|nil key, string? err
function crypto.argon2id(password, salt16, opts) end
---@return string ciphertext_with_tag
function crypto.aead_encrypt(plaintext, key32, nonce24, associated_data) end
---@return string|aitbc.secret|nil plaintext, string? err
function crypto.aead_decrypt(ciphertext, key32, nonce24, associated_data, as_secret) end
---@return boolean  constant-time comparison
function crypto.equal(a, b) end
---@return string
function crypto.hex(bytes) end
---@return string|nil bytes, string? err
function crypto.unhex(text) end
---@param variant? "standard"|"urlsafe"
---@return string
function crypto.base64(bytes, variant) end
---@return string|nil bytes, string? err
function crypto.unbase64(text, variant) end

return crypto
