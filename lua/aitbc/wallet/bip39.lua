--- BIP-39 mnemonic phrases: entropy <-> words (English list, checksummed),
-- and the seed (PBKDF2-HMAC-SHA512, 2048 rounds, salt "mnemonic" .. passphrase).
local crypto = require "aitbc.crypto"

local bip39 = {}

local words, index

local function load_words()
  if words then return words, index end
  local ok, text = pcall(require, "aitbc.wallet.wordlist")
  if not ok then -- running from a source tree (AITBC_LUA_DIR): read Debian's copy, checked the same way
    local path = "/usr/lib/python3/dist-packages/mnemonic/wordlist/english.txt"
    text = require("aitbc.sys").read_file(path)
    if not text or crypto.hex(crypto.sha256(text)) ~= "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda" then
      error("the BIP-39 wordlist is missing or altered (" .. path .. "; install python3-mnemonic)", 0)
    end
  end
  words, index = {}, {}
  for w in text:gmatch("%l+") do
    words[#words + 1] = w
    index[w] = #words - 1
  end
  assert(#words == 2048, "the BIP-39 wordlist must have 2048 words")
  return words, index
end

local function bits_of(bytes, n)
  local out = {}
  for i = 1, #bytes do
    local b = bytes:byte(i)
    for j = 7, 0, -1 do out[#out + 1] = (b >> j) & 1 end
  end
  if n then for i = #out, n + 1, -1 do out[i] = nil end end
  return out
end

--- entropy (16..32 bytes, a multiple of 4) -> phrase
function bip39.from_entropy(entropy)
  assert(#entropy >= 16 and #entropy <= 32 and #entropy % 4 == 0, "entropy must be 16, 20, 24, 28 or 32 bytes")
  local list = load_words()
  local bits = bits_of(entropy)
  for _, b in ipairs(bits_of(crypto.sha256(entropy), #entropy * 8 // 32)) do bits[#bits + 1] = b end
  local out = {}
  for i = 1, #bits, 11 do
    local v = 0
    for j = i, i + 10 do v = (v << 1) | bits[j] end
    out[#out + 1] = list[v + 1]
  end
  return table.concat(out, " ")
end

function bip39.generate(words_count)
  return bip39.from_entropy(crypto.random((words_count or 24) * 11 * 32 // 33 // 8))
end

--- phrase -> entropy | nil, reason (unknown word, wrong length, bad checksum)
function bip39.to_entropy(phrase)
  local _, idx = load_words()
  local list = {}
  for w in phrase:lower():gmatch("%S+") do list[#list + 1] = w end
  if #list < 12 or #list > 24 or #list % 3 ~= 0 then
    return nil, "a recovery phrase has 12, 15, 18, 21 or 24 words (this one has " .. #list .. ")"
  end
  local bits = {}
  for n, w in ipairs(list) do
    local v = idx[w]
    if not v then return nil, string.format("word %d ('%s') is not in the BIP-39 English list", n, w) end
    for j = 10, 0, -1 do bits[#bits + 1] = (v >> j) & 1 end
  end
  local ent_bits = #bits * 32 // 33
  local bytes = {}
  for i = 1, ent_bits, 8 do
    local v = 0
    for j = i, i + 7 do v = (v << 1) | bits[j] end
    bytes[#bytes + 1] = v
  end
  local entropy = string.char(table.unpack(bytes))
  local check = bits_of(crypto.sha256(entropy), #bits - ent_bits)
  for i, b in ipairs(check) do
    if bits[ent_bits + i] ~= b then return nil, "the phrase's checksum does not match (a word is wrong or out of order)" end
  end
  return entropy
end

local function xor64(a, b)
  local x = { string.unpack("<I8I8I8I8I8I8I8I8", a) }
  local y = { string.unpack("<I8I8I8I8I8I8I8I8", b) }
  for i = 1, 8 do x[i] = x[i] ~ y[i] end
  return string.pack("<I8I8I8I8I8I8I8I8", table.unpack(x, 1, 8))
end

--- phrase [, passphrase] -> 64-byte seed (as a secret)
function bip39.to_seed(phrase, passphrase)
  local normalized = table.concat((function()
    local t = {}
    for w in phrase:gmatch("%S+") do t[#t + 1] = w end
    return t
  end)(), " ")
  local u = crypto.hmac_sha512(normalized, "mnemonic" .. (passphrase or "") .. "\0\0\0\1")
  local t = u
  for _ = 2, 2048 do
    u = crypto.hmac_sha512(normalized, u)
    t = xor64(t, u)
  end
  return crypto.secret(t)
end

return bip39
