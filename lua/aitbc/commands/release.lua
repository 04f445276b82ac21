--- aitbc release: make the signed release channel nodes update from
-- (aitbc.ops.release): a release key, and binaries with a manifest signed
-- by it.  Nodes pin the key's public half in DATA_DIR/node.json.
local function run_keygen(ctx)
  local config = require "aitbc.config"
  local path = config.expand(ctx.opts.out)
  local key = require("aitbc.ops.release").keygen(path)
  return { path = path, public_key = key.id }, function(d, out)
    out:success("release key written to " .. d.path .. " (mode 0600; keep it off the nodes)")
    out:print("  public key " .. d.public_key)
    out:print("  pin it on a node: DATA_DIR/node.json {\"release\": {\"channel\": \"DIR_OR_URL\", \"public_key\": \""
      .. d.public_key .. "\"}}")
  end
end

local function run_build(ctx)
  local o = ctx.opts
  local config = require "aitbc.config"
  local r = require("aitbc.ops.release").build { version = o.version, key = config.expand(o.key),
    out = config.expand(o.out), binary = o.binary and config.expand(o.binary), channel = o.channel, notes = o.notes,
    expires_days = o.expires_days }
  return r, function(d, out)
    out:success(string.format("release %s in %s (%d bytes, sha256 %s)", d.release.version, d.out, d.release.size,
      d.release.sha256))
    out:print(string.format("  manifest %s/channel.json signed by %s, sequence %d, %d version(s), expires %s", d.out,
      d.public_key, d.sequence, d.releases, os.date("!%Y-%m-%dT%H:%M:%SZ", d.expires_at)))
  end
end

return {
  name = "release",
  category = "Node",
  summary = "Make a signed release channel that nodes update from (aitbc admin update)",
  description = "A channel is a directory (or a URL serving one) with the binaries and channel.json, a manifest of "
    .. "their versions, sizes, SHA-256 and database schema, signed with Ed25519 by the release key; it expires and "
    .. "its sequence only grows. Nodes pin the public key in DATA_DIR/node.json and refuse an unsigned, tampered, "
    .. "expired or older manifest, or a binary that differs from it.",
  commands = {
    {
      name = "keygen",
      summary = "Make a release key (Ed25519 seed, hex, mode 0600) and print its public key",
      options = { { "--out", required = true, metavar = "FILE", help = "the key file (never overwritten)" } },
      examples = { "aitbc release keygen --out ~/release.key" },
      run = run_keygen,
    },
    {
      name = "build",
      summary = "Add a binary to a channel and sign its manifest",
      description = "Copies the binary (this one unless --binary) as aitbc-VERSION into --out and re-signs "
        .. "channel.json (an existing one must be this key's). The binary must say it is --version "
        .. "(make VERSION=V builds one).",
      options = {
        { "--version", required = true, metavar = "V", help = "the release's version (1.2.3)" },
        { "--key", required = true, metavar = "FILE", help = "the release key (aitbc release keygen)" },
        { "--out", required = true, metavar = "DIR", help = "the channel directory" },
        { "--binary", metavar = "FILE", help = "the binary to release (default: this aitbc)" },
        { "--channel", metavar = "NAME", help = "the channel's name (stable)" },
        { "--notes", metavar = "TEXT", help = "release notes" },
        { "--expires-days", type = "number", min = 0.001, max = 3650, metavar = "DAYS",
          help = "the manifest expires after this many days (90)" },
      },
      examples = { "aitbc release build --version 0.2.0 --key ~/release.key --out /srv/aitbc-releases" },
      run = run_build,
    },
  },
}
