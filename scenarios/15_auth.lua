--- Spec §15: authentication and API key management, scenarios 15.1–15.14,
-- with the spec's command lines as written after `aitbc devnet up` (15.1's
-- keys come from the node's admin, as a user's would; each import sets the
-- variables that scenario names).
local scenario = require "aitbc.scenario"
local s = scenario.new("15. Authentication & API key management")

--- Runs a spec line with the given environment variables set; expects exit 0.
local function ok(t, line, env)
  local r = t:run(line, { env = env })
  t:expect_exit(r, 0)
  return r
end

local function keys_in(t, file)
  local cfg = t:json(t:run("cat " .. file))
  return cfg.keys or {}
end

s:step("15.1", "Import API keys from environment variables", function(t)
  t.vars.client, t.vars.client_id = t:api_key("client")
  t.vars.admin, t.vars.admin_id = t:api_key("admin")
  t.vars.coordinator = t:api_key("admin", { name = "coordinator" })
  -- the prerequisite, exported as a user would for the rest of the section: with it set, every
  -- command still takes the stored admin (and miner) key where it needs one (README: key precedence)
  t:setenv("AITBC_API_KEY", t.vars.client)
  local r = ok(t, "aitbc auth import-env", { AITBC_ADMIN_KEY = t.vars.admin, AITBC_COORDINATOR_KEY = t.vars.coordinator })
  t:expect_match(r.stdout, "imported client key " .. t.vars.client_id, "client key imported")
  t:expect_match(r.stdout, "imported admin key " .. t.vars.admin_id, "admin key imported")
  t:expect_match(r.stdout, "imported coordinator key", "coordinator key imported")
  t:expect_match(r.stdout, "accepted by the node as a client key", "verified against the node")
  t:expect(not r.stdout:find(t.vars.admin, 1, true), "keys are not printed unmasked")
  local stored = keys_in(t, "~/.aitbc/config.json").default
  t:expect(stored.client.key == t.vars.client and stored.admin.key == t.vars.admin, "stored in the CLI configuration")
end)

s:step("15.2", "Import a specific API key type", function(t)
  local r = ok(t, "aitbc auth import-env --key-type admin",
    { AITBC_ADMIN_KEY = t.vars.admin, AITBC_API_KEY = "ignored_for_this_type_1" })
  t:expect_match(r.stdout, "imported admin key", "admin key imported")
  t:expect(not r.stdout:find("imported client", 1, true), "only the admin key")
  t:expect_match(r.stdout, "accepted by the node as an admin key", "available for privileged operations")
end)

s:step("15.3", "Import a client API key", function(t)
  local r = ok(t, "aitbc auth import-env --key-type client", { AITBC_CLIENT_KEY = t.vars.client })
  t:expect_match(r.stdout, "imported client key .* from AITBC_CLIENT_KEY", "client key from AITBC_CLIENT_KEY")
end)

s:step("15.4", "Import with a custom configuration path", function(t)
  t:run("mkdir -p ~/.aitbc")
  local r = ok(t, "aitbc auth import-env --config ~/.aitbc/custom_config.json", { AITBC_API_KEY = t.vars.client })
  t:expect_match(r.stdout, "stored in .*/%.aitbc/custom_config%.json", "names the custom path")
  t:expect(keys_in(t, "~/.aitbc/custom_config.json").default.client.key == t.vars.client, "written there")
  local bad = t:run("aitbc auth import-env --config ~/missing/dir/config.json", { env = { AITBC_API_KEY = t.vars.client } })
  t:expect_exit(bad, 1)
  t:expect_match(bad.stderr, "does not exist", "with a clear reason")
end)

s:step("15.5", "Validate imported API keys", function(t)
  local r = ok(t, "aitbc auth validate")
  t:expect_match(r.stdout, "admin%s+key_%x+%s+ok%s+valid%s+admin", "admin key: format ok, accepted, admin")
  t:expect_match(r.stdout, "client%s+key_%x+%s+ok%s+valid%s+client", "client key: format ok, accepted, client")
  t:expect_match(r.stdout, "never", "expiration status")
end)

s:step("15.6", "List active API keys", function(t)
  local r = ok(t, "aitbc auth list")
  t:expect_match(r.stdout, "KEY ID%s+TYPE%s+ENV%s+STATUS%s+LAST USED%s+PERMISSIONS", "table header")
  t:expect_match(r.stdout, "admin%s+default%s+active", "admin key active")
  t:expect(not r.stdout:find(t.vars.client, 1, true), "keys masked")
  local j = t:json(t:run("aitbc auth list --output json"))
  t:expect(#j.keys >= 3 and #j.keys[1].permissions > 0, "permissions listed")
end)

s:step("15.7", "Rotate API keys", function(t)
  local r = ok(t, "aitbc auth rotate --key-type admin --generate-new")
  t:expect_match(r.stdout, "new admin key key_%x+ created", "new key confirmation")
  t:expect_match(r.stdout, "old key " .. t.vars.admin_id .. " deactivated", "old key deactivation notice")
  t:expect_match(r.stdout, "local configuration updated", "local configuration updated")
  t:expect_match(r.stdout, "AITBC_ADMIN_KEY", "instructions for the environment variable")
  local old = t:run("aitbc --api-key " .. t.vars.admin .. " api /v1/auth/whoami")
  t:expect(old.code == 4, "the old key is refused by the node (exit " .. old.code .. ")")
  t.vars.admin = keys_in(t, "~/.aitbc/config.json").default.admin.key
  ok(t, "aitbc --api-key " .. t.vars.admin .. " api /v1/auth/whoami")
end)

s:step("15.8", "Export API keys (secure)", function(t)
  local r = ok(t, "aitbc auth export --format env --output ~/aitbc_keys.env")
  t:expect_match(r.stdout, "mode 0600", "file permissions 600")
  local sha = t:expect_match(r.stdout, "sha256 (%x+)", "checksum")
  t:expect_match(r.stderr, "holds live credentials", "warning about secure storage")
  t:expect(t:run("stat -c %a ~/aitbc_keys.env").stdout == "600\n", "mode is 600 on disk")
  t:expect(t:run("cd ~ && sha256sum -c aitbc_keys.env.sha256").code == 0, "checksum verifies")
  t:expect(t:run("sha256sum ~/aitbc_keys.env").stdout:sub(1, 64) == sha, "the printed checksum is the file's")
  local env = t:run(". ~/aitbc_keys.env && echo $AITBC_ADMIN_KEY")
  t:expect(env.stdout == t.vars.admin .. "\n", "properly formatted assignments")
end)

s:step("15.9", "Test API key permissions", function(t)
  local r = ok(t, "aitbc auth test --permissions")
  t:expect_match(r.stdout, "CLIENT OPS%s+MINER OPS%s+ADMIN OPS", "permission matrix")
  t:expect_match(r.stdout, "admin%s+read%-write%s+none%s+read%-write", "admin key: client and admin access, read-write")
  t:expect_match(r.stdout, "client%s+read%-write%s+none%s+none", "client key: client access only")
  t:expect_match(r.stdout, "POST /v1/admin/keys%s+manage users and keys%s+%d+%s+allowed", "admin operations probed")
  t:expect_match(r.stdout, "rate limits:", "rate limits reported")
end)

s:step("15.10", "Handle invalid API keys", function(t)
  local r = t:run("aitbc auth import-env", { env = { AITBC_ADMIN_KEY = "short", AITBC_CLIENT_KEY = t.vars.client } })
  t:expect(r.code == 1, "exits 1 when a key fails (got " .. r.code .. ")")
  t:expect_match(r.stderr, "AITBC_ADMIN_KEY is too short", "which key failed and why")
  t:expect_match(r.stderr, "fix:", "instructions for fixing it")
  t:expect_match(r.stdout, "imported client key", "the other keys were imported")
end)

s:step("15.11", "Multi-environment key management", function(t)
  local prod = t:api_key("admin", { environment = "production" })
  local r = ok(t, "aitbc auth import-env --environment production", { AITBC_ADMIN_KEY = prod })
  t:expect_match(r.stdout, "under environment 'production'", "keys tagged with the environment")
  t:expect_match(r.stdout, "active environment is 'default'", "clear indication of the active environment")
  local cfg = keys_in(t, "~/.aitbc/config.json")
  t:expect(cfg.production.admin.key == prod and cfg.default.admin.key == t.vars.admin, "kept apart per environment")
  local who = t:json(t:run("aitbc --environment production --output json api --role admin /v1/auth/whoami"))
  t:expect(who.environment == "production", "--environment switches the keys used")
end)

s:step("15.12", "Revoke API keys", function(t)
  local id = t.vars.client_id
  local r = ok(t, "aitbc auth revoke --key-id " .. id .. " --confirm")
  t:expect_match(r.stdout, "revoked " .. id .. " on the node", "deactivated on the node")
  t:expect_match(r.stdout, "removed from", "removed from the local configuration")
  t:expect_match(r.stdout, "audit log", "audit entry")
  local refused = t:run("aitbc --api-key " .. t.vars.client .. " api /v1/jobs")
  t:expect(refused.code == 4, "the revoked key is refused at once")
  t:expect(not keys_in(t, "~/.aitbc/config.json").default.client, "no longer stored")
end)

s:step("15.13", "Emergency key recovery", function(t)
  local pw = { AITBC_BACKUP_PASSWORD = "correct horse battery" }
  ok(t, "aitbc auth backup --output ~/aitbc_backup.enc", pw)
  ok(t, "rm ~/.aitbc/config.json")
  local wrong = t:run("aitbc auth recover --backup-file ~/aitbc_backup.enc",
    { env = { AITBC_BACKUP_PASSWORD = "wrong password" } })
  t:expect(wrong.code == 4, "a wrong password is refused")
  t:expect(t:run("test -e ~/.aitbc/config.json").code == 1, "and nothing is written")
  local r = ok(t, "aitbc auth recover --backup-file ~/aitbc_backup.enc", pw)
  t:expect_match(r.stdout, "decrypted .*aitbc_backup%.enc and restored %d key", "decryption and restoration")
  t:expect_match(r.stdout, "admin%s+key_%x+%s+valid%s+admin", "re-authentication test against the node")
end)

s:step("15.14", "Audit API key usage", function(t)
  t:run("aitbc --api-key aitbc_client_not_a_real_key_0000 api /v1/jobs")
  local r = ok(t, "aitbc auth audit --days 30 --detailed")
  t:expect_match(r.stdout, "API key usage over 30 days", "report header")
  t:expect_match(r.stdout, "Endpoints", "accessed endpoints")
  t:expect_match(r.stdout, "Requests by hour", "usage pattern")
  t:expect_match(r.stdout, "not available", "geographic location (not available) stated")
  t:expect_match(r.stdout, "revoked key key_%x+ was presented", "alert: a revoked key was used")
  t:expect_match(r.stdout, "Recommendations", "rotation recommendations")
end)

return s
