--- aitbc auth: API keys — import, validate, list, rotate, export, test,
-- revoke, back up, recover, audit.  Logic in lua/aitbc/auth.lua.
local function impl(name) return function(ctx) return require("aitbc.auth")[name](ctx) end end

local key_type = { "--key-type", choices = { "admin", "client", "miner", "coordinator" }, help = "only keys of this type" }

return {
  name = "auth",
  category = "Node",
  summary = "Manage API keys: import, validate, rotate, export, revoke, back up, audit",
  description = "Keys are stored per environment in the config file (mode 0600). A command uses the key of the "
    .. "role it needs: --api-key > AITBC_<ROLE>_KEY > AITBC_API_KEY > the active environment's stored key > api_key.",
  commands = {
    {
      name = "import-env",
      creates_config = true,
      summary = "Import keys from AITBC_API_KEY, AITBC_CLIENT_KEY, AITBC_ADMIN_KEY, AITBC_COORDINATOR_KEY, AITBC_MINER_KEY",
      description = "Each key must have at least 16 characters (letters, digits, '_', '-', '.'). Valid keys are "
        .. "imported even when others fail; any failure exits 1. Keys go to the environment chosen with "
        .. "--environment (default: the active one) in the config file chosen with --config.",
      options = { key_type },
      examples = { "aitbc auth import-env", "aitbc auth import-env --key-type admin",
                   "aitbc auth import-env --config ~/.aitbc/custom_config.json",
                   "aitbc auth import-env --environment production" },
      run = impl("import_env"),
    },
    {
      name = "validate",
      summary = "Check each stored key's format and whether the node accepts it (type, expiry)",
      options = { key_type },
      examples = { "aitbc auth validate" },
      run = impl("validate"),
    },
    {
      name = "list",
      summary = "Stored keys (masked) with type, environment, status on the node, last use and permissions",
      options = { { "--environment-only", type = "boolean", help = "only the active environment's keys" } },
      examples = { "aitbc auth list", "aitbc auth list --output json" },
      run = impl("list"),
    },
    {
      name = "use",
      creates_config = true,
      summary = "Switch the active environment (and optionally set its node URL)",
      args = { { "environment", help = "development, staging, production, ..." } },
      options = { { "--url", metavar = "URL", help = "node URL for this environment" } },
      examples = { "aitbc auth use production", "aitbc auth use staging --url https://staging.example:8000" },
      run = impl("use"),
    },
    {
      name = "rotate",
      summary = "Create a new key on the node, revoke the old one, update the local configuration",
      options = {
        { "--key-type", choices = { "admin", "client", "miner", "coordinator" }, default = "admin",
          help = "which key to rotate" },
        { "--generate-new", type = "boolean", help = "let the node generate the new key" },
        { "--new-key", metavar = "KEY", help = "register this key instead of generating one" },
        { "--reveal", type = "boolean", help = "print the new key unmasked" },
      },
      examples = { "aitbc auth rotate --key-type admin --generate-new" },
      run = impl("rotate"),
    },
    {
      name = "export",
      summary = "Write stored keys as environment assignments (mode 0600) with a SHA-256 checksum",
      options = {
        { "--format", choices = { "env", "dotenv", "json" }, default = "env",
          help = "env: export VAR=..., dotenv: VAR=..., json: an object" },
        { "--output", metavar = "FILE", help = "file to write (default: stdout); FILE.sha256 gets the checksum" },
        key_type,
      },
      examples = { "aitbc auth export --format env --output ~/aitbc_keys.env",
                   'eval "$(aitbc auth export --format env --key-type admin)"' },
      run = impl("export"),
    },
    {
      name = "test",
      summary = "Probe what each configured key may do on the node (client, miner, admin; read/write)",
      options = { { "--permissions", type = "boolean", help = "show every endpoint probed" } },
      examples = { "aitbc auth test --permissions" },
      run = impl("test"),
    },
    {
      name = "revoke",
      summary = "Revoke a key on the node and remove it from the local configuration",
      options = {
        { "--key-id", metavar = "ID", required = true, help = "the key's id (key_..., see 'aitbc auth list')" },
        { "--confirm", type = "boolean", help = "do not ask for confirmation" },
      },
      examples = { "aitbc auth revoke --key-id key_0ed546631f4eb5de --confirm" },
      run = impl("revoke"),
    },
    {
      name = "backup",
      summary = "Write an encrypted backup of the stored keys (Argon2id + XChaCha20-Poly1305)",
      description = "The password comes from --password-file, else AITBC_BACKUP_PASSWORD, else a hidden prompt.",
      options = {
        { "--output", metavar = "FILE", required = true, help = "backup file to write (mode 0600)" },
        { "--password-file", metavar = "FILE", help = "read the password from this file" },
      },
      examples = { "aitbc auth backup --output ~/aitbc_backup.enc" },
      run = impl("backup"),
    },
    {
      name = "recover",
      creates_config = true,
      summary = "Restore keys from an encrypted backup and re-check them against the node",
      options = {
        { "--backup-file", metavar = "FILE", required = true, help = "a file made by 'aitbc auth backup'" },
        { "--password-file", metavar = "FILE", help = "read the password from this file" },
        { "--no-verify", type = "boolean", help = "do not re-authenticate the keys against the node" },
      },
      examples = { "aitbc auth recover --backup-file ~/aitbc_backup.enc" },
      run = impl("recover"),
    },
    {
      name = "audit",
      summary = "Usage report from the node's audit log: by key, endpoint, hour and address, with alerts",
      options = {
        { "--days", type = "number", default = 30, min = 0.01, max = 3650, metavar = "N", help = "period to cover" },
        { "--detailed", type = "boolean", help = "add endpoints, addresses, hourly pattern and per-key breakdown" },
        { "--key-id", metavar = "ID", help = "only this key" },
      },
      examples = { "aitbc auth audit --days 30 --detailed" },
      run = impl("audit"),
    },
  },
}
