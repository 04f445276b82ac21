--- SLIP-0010 key derivation for Ed25519 (hardened children only).
local crypto = require "aitbc.crypto"

local slip10 = {}

local HARDENED = 0x80000000

function slip10.master(seed)
  local i = crypto.hmac_sha512("ed25519 seed", seed)
  return i:sub(1, 32), i:sub(33)
end

function slip10.child(key, chain, index)
  local i = crypto.hmac_sha512(chain, "\0" .. key .. string.pack(">I4", index | HARDENED))
  return i:sub(1, 32), i:sub(33)
end

--- derive(seed, "m/44'/8888'/0'/0'/0'") -> private key seed (32 bytes), chain code
function slip10.derive(seed, path)
  assert(path:match("^m"), "a path starts with m")
  local key, chain = slip10.master(seed)
  for part in path:gmatch("/(%d+)'") do key, chain = slip10.child(key, chain, tonumber(part)) end
  return key, chain
end

return slip10
