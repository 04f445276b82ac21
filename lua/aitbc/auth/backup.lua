--- Encrypted backups of the stored API keys (`aitbc auth backup/recover`):
-- the config file's keys, environments and node URL as JSON, sealed under a password
-- (aitbc.secrets.sealed: Argon2id + XChaCha20-Poly1305).
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local apikey = require "aitbc.protocol.apikey"
local keys = require "aitbc.auth.keys"
local sealed = require "aitbc.secrets.sealed"

local backup = {}

local AD = "aitbc-key-backup-v1"

--- The backup document of the config file's keys (now: an ISO time).
function backup.seal(file, password, now)
  local plaintext = json.encode { format = "aitbc-keys", version = 1, created_at = now, keys = file.keys,
    environments = file.environments, url = file.url } -- url: the node the keys are for
  return sealed.seal({ format = "aitbc-key-backup", version = 1, created_at = now }, plaintext, password, AD)
end

--- Raises unless doc (read from path) is an intact backup: checked before
-- a password is asked for.
function backup.check(doc, path)
  if type(doc) ~= "table" or doc.format ~= "aitbc-key-backup" or doc.version ~= 1 or type(doc.kdf) ~= "table" then
    errors.raise("failure", path .. " is not an aitbc key backup (made by 'aitbc auth backup')")
  end
  local intact, why = sealed.check(doc)
  if not intact then errors.raise("failure", path .. " is damaged (" .. why .. ")") end
end

--- The backup's content {keys, environments} | raises (exit 4 on a wrong
-- password or an altered file).
function backup.open(doc, password, path)
  local plaintext = sealed.open(doc, password, AD)
  if not plaintext then
    errors.raise("auth", "cannot decrypt " .. path .. ": wrong password, or the file was altered",
      "nothing was changed; try again with the right password", { code = "decrypt_failed" })
  end
  local content = json.decode(plaintext)
  if type(content) ~= "table" or content.format ~= "aitbc-keys" then
    errors.raise("failure", "the backup's content is not readable")
  end
  return content
end

--- Puts the backup's well-formed keys into the config file and merges its
-- environments; returns what was restored {environment, type, key}.
function backup.restore(file, content)
  local restored = {}
  for environment, entries in pairs(type(content.keys) == "table" and content.keys or {}) do
    for key_type, e in pairs(type(entries) == "table" and entries or {}) do
      if type(e) == "table" and apikey.check(e.key) then
        keys.put(file, environment, key_type, e)
        restored[#restored + 1] = { environment = environment, type = key_type, key = e.key }
      end
    end
  end
  if type(content.url) == "string" and file.url == nil then file.url = content.url end
  if type(content.environments) == "table" then
    file.environments = type(file.environments) == "table" and file.environments or {}
    for k, v in pairs(content.environments) do file.environments[k] = v end
  end
  return restored
end

return backup
