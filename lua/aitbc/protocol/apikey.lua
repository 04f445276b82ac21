--- API keys as both the node and the CLI see them: format rules, the
-- public key id derived from a key (so the CLI can name a key without
-- asking the node), the stored hash, and generation.
local crypto = require "aitbc.crypto"

local apikey = { MIN_LENGTH = 16, MAX_LENGTH = 256 }

--- check(key) -> true | nil, reason, how to fix
function apikey.check(key)
  if type(key) ~= "string" or key == "" then return nil, "is empty", "set it to the key your node administrator gave you" end
  if key:find("^%s") or key:find("%s$") then
    return nil, "has leading or trailing whitespace", "remove the spaces or newline around the key"
  end
  if #key < apikey.MIN_LENGTH then
    return nil, string.format("is too short (%d characters, at least %d needed)", #key, apikey.MIN_LENGTH),
      "copy the whole key; keys issued by an AITBC node are 50+ characters"
  end
  if #key > apikey.MAX_LENGTH then return nil, "is longer than " .. apikey.MAX_LENGTH .. " characters", nil end
  if key:sub(1, 1) == "$" then
    return nil, "looks like an unexpanded shell variable (" .. key .. ")", "check the quoting where the variable is set"
  end
  if key == "your_api_key_here" then return nil, "is the placeholder from an example", "replace it with a real key" end
  local bad = key:match("[^%w_%-%.]")
  if bad then
    return nil, string.format("contains %q; only letters, digits, '_', '-' and '.' are allowed", bad),
      "copy the key again without extra characters"
  end
  return true
end

--- key -> key_id (public, e.g. key_0ed546631f4eb5de), hash (what the node stores)
function apikey.identity(key)
  local digest = crypto.hex(crypto.sha256("aitbc-api-key:" .. key))
  return "key_" .. digest:sub(1, 16), digest
end

function apikey.generate(role)
  return "aitbc_" .. role .. "_" .. crypto.hex(crypto.random(20))
end

--- For display: the first 6 and last 4 characters.
function apikey.mask(key)
  if type(key) ~= "string" then return nil end
  if #key < 14 then return string.rep("*", 8) end
  return key:sub(1, 6) .. "…" .. key:sub(-4)
end

return apikey
