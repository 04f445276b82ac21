--- The password for a sealed file, one precedence for every user of one:
-- --password-file FILE > the environment variable of its kind > a hidden
-- prompt (none without a terminal: the error says what to set instead).
local errors = require "aitbc.errors"
local sys = require "aitbc.sys"

local password = { MIN_LENGTH = 8 }

--- The kinds of sealed files, with their variable and prompt.
password.KINDS = {
  wallet = { env = "AITBC_WALLET_PASSWORD", prompt = "Wallet password: ", what = "wallet password" },
  backup = { env = "AITBC_BACKUP_PASSWORD", prompt = "Backup password: ", what = "backup password" },
}

local function prompt(kind, new)
  local got, err = sys.read_password(kind.prompt)
  if not got then
    errors.raise("usage", "a " .. kind.what .. " is needed (" .. err .. ")",
      "set " .. kind.env .. " or pass --password-file FILE")
  end
  if new and sys.read_password("Repeat the password: ") ~= got then errors.raise("usage", "the passwords differ") end
  return got
end

--- get(kind, file, new, interactive) -> password.  kind: a key of KINDS;
-- file: the --password-file value or nil; new: a password being set (asked
-- twice, at least MIN_LENGTH characters); interactive: false when nothing
-- may prompt (JSON mode never does).
function password.get(kind_name, file, new, interactive)
  local kind = assert(password.KINDS[kind_name], "unknown password kind")
  local env = sys.getenv(kind.env)
  local pw
  if file then
    pw = require("aitbc.config").read_input(file, "--password-file"):gsub("\r?\n$", "")
  elseif env and env ~= "" then
    pw = env
  elseif interactive == false then
    errors.raise("usage", "a " .. kind.what .. " is needed, and JSON output never prompts",
      "set " .. kind.env .. " or pass --password-file FILE")
  else
    pw = prompt(kind, new)
  end
  if new and #pw < password.MIN_LENGTH then
    errors.raise("usage", "the " .. kind.what .. " must be at least " .. password.MIN_LENGTH .. " characters")
  end
  return pw
end

return password
