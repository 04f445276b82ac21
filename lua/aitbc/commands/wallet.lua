--- aitbc wallet: keys the user owns (BIP-39 phrase, Ed25519, ait1 addresses).
-- Balances, transfers and staking go through the node's chain.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function W() return require "aitbc.wallet" end

local password_file = { "--password-file", metavar = "FILE",
  help = "read the password from FILE (else AITBC_WALLET_PASSWORD or a prompt)" }
--- The wallet password: --password-file > AITBC_WALLET_PASSWORD > a prompt.
local function password(ctx, new)
  return require("aitbc.secrets.password").get("wallet", ctx.opts.password_file, new, ctx.out.format == "table")
end

local function set_active(ctx, name)
  ctx.config.file.active_wallet = name
  assert(require("aitbc.config").write_file(ctx.config.path, ctx.config.file))
end

local function active(ctx, name) return W().active_name(ctx, name) end

local function words_grid(phrase, out)
  local list = {}
  for w in phrase:gmatch("%S+") do list[#list + 1] = w end
  local rows = math.ceil(#list / 4)
  for r = 1, rows do
    local cells = {}
    for c = 0, 3 do
      local i = r + c * rows
      if list[i] then cells[#cells + 1] = string.format("%2d %-10s", i, list[i]) end
    end
    out:print("  " .. table.concat(cells, "  "))
  end
end

-- ---- on the chain ----

local function node(ctx) return require("aitbc.api").from_context(ctx, { role = "client" }) end
--- A path under the chain of the --chain setting: chain_path(ctx, "/accounts/{address}", {address = a}).
local function chain_path(ctx, template, values)
  values = values or {}
  values.chain = ctx.settings.chain
  return require("aitbc.api").path("/v1/chain/{chain}" .. template, values)
end

local function amount_units(text, what) return require("aitbc.money").from_option(text, what) end

-- What the commands read from the node's replies (aitbc.api check_reply specs).
local ACCOUNT = { address = "string", balance = "scalar", staked = "scalar", total = "scalar", chain_id = "string?",
  nonce = "integer?", balance_units = "string?", staked_units = "string?", escrow = "scalar?", escrow_units = "string?",
  escrow_jobs = "integer?" }

--- Signs a transaction with the active wallet and sends it; returns the node's answer.
local function send_tx(ctx, kind, payload)
  return W().submit(ctx, node(ctx), kind, payload, password(ctx), ctx.opts.wait)
end

local function render_tx(what)
  return function(d, out)
    out:success(what .. ": transaction " .. d.hash)
    out:print(out:format_record({ status = d.status .. (d.block_height and (" (block " .. d.block_height .. ")") or
      " (sealed in the next block)"), chain = d.chain_id, from = d.from }, { "status", "chain", "from" }))
  end
end

local wait = { "--wait", type = "boolean", help = "wait until a block includes it" }

-- The JSON fields of transactions (--json FIELDS; aitbc.cli.registry).
local TX_FIELDS = { "hash", "chain_id", "type", "from", "to", "amount", "nonce", "status", "block_height", "received_at",
  "tx", "signature" }
local SENT_FIELDS = { "hash", "tx_hash", "status", "block_height", "from", "chain_id" }
local wallet_arg = { "name", optional = true, help = "wallet name", complete = "wallet" }


local chain_commands = {
  {
    name = "balance",
    summary = "Available, staked and total balance of the active wallet (or NAME), from the chain",
    args = { wallet_arg }, watch = true,
    fields = { "wallet", "address", "chain_id", "nonce", "balance", "staked", "total", "balance_units", "staked_units" },
    examples = { "aitbc wallet balance" },
    run = function(ctx)
      local name = active(ctx, ctx.args.name)
      local doc = W().read(name)
      local a = node(ctx):call("GET", chain_path(ctx, "/accounts/{address}", { address = doc.address }), { expect = ACCOUNT })
      -- the table's words: available (spendable), staked, total (the two), in escrow (paid into jobs not yet settled)
      local b = { wallet = name, address = a.address, chain_id = a.chain_id, nonce = a.nonce,
        available = a.balance, staked = a.staked, total = a.total, in_escrow = a.escrow or "0",
        escrow_jobs = a.escrow_jobs or 0, available_units = a.balance_units, staked_units = a.staked_units,
        escrow_units = a.escrow_units }
      return b, function(d, out)
        out:print(out:format_record({ wallet = d.wallet, address = d.address, available = d.available .. " AITBC",
          staked = d.staked .. " AITBC", total = d.total .. " AITBC", chain = d.chain_id,
          escrow = d.in_escrow .. " AITBC" .. (d.escrow_jobs > 0 and string.format(" (%d job%s not settled yet)",
            d.escrow_jobs, d.escrow_jobs == 1 and "" or "s") or "") },
          { "wallet", "address", "available", "staked", "total", { "escrow", "in escrow" }, "chain" }))
      end
    end,
  },
  {
    name = "send",
    summary = "Send AITBC from the active wallet (signed here, checked by the node)",
    id_field = "hash", fields = SENT_FIELDS,
    args = { { "to_arg", optional = true, help = "recipient address (or --to)" },
             { "amount_arg", optional = true, help = "AITBC (or --amount)" } },
    options = { { "--to", metavar = "ADDRESS", help = "recipient" }, { "--amount", metavar = "AITBC", help = "how much" },
      password_file, wait },
    examples = { "aitbc wallet send ait1... 10", "aitbc wallet send --to ait1... --amount 2.5 --wait" },
    run = function(ctx)
      local to = ctx.opts.to or ctx.args.to_arg
      local amount = ctx.opts.amount or ctx.args.amount_arg
      if not to or not amount then errors.raise("usage", "say whom and how much: aitbc wallet send ADDRESS AMOUNT") end
      to = W().address_arg(to, "the recipient") -- lower case before signing: the signature covers it
      local res = send_tx(ctx, "transfer", { to = to, amount = tostring(amount_units(amount, "amount")) })
      return res, render_tx("sent " .. amount .. " AITBC")
    end,
  },
  {
    name = "stake",
    summary = "Stake AITBC from the active wallet",
    id_field = "hash", fields = SENT_FIELDS,
    args = { { "amount", help = "AITBC" } }, options = { password_file, wait },
    run = function(ctx)
      return send_tx(ctx, "stake", { amount = tostring(amount_units(ctx.args.amount, "amount")) }),
        render_tx("staked " .. ctx.args.amount .. " AITBC")
    end,
  },
  {
    name = "unstake",
    summary = "Unstake AITBC back to the active wallet's balance",
    id_field = "hash", fields = SENT_FIELDS,
    args = { { "amount", help = "AITBC" } }, options = { password_file, wait },
    run = function(ctx)
      return send_tx(ctx, "unstake", { amount = tostring(amount_units(ctx.args.amount, "amount")) }),
        render_tx("unstaked " .. ctx.args.amount .. " AITBC")
    end,
  },
  {
    name = "faucet",
    summary = "Get devnet coins for the active wallet (limited per address and per API key; see the README)",
    id_field = "hash",
    options = { { "--amount", metavar = "AITBC", help = "how much (default 100, at most 1000)" } },
    run = function(ctx)
      if ctx.opts.amount then amount_units(ctx.opts.amount, "--amount") end -- the node checks its own limit
      local doc = W().read(active(ctx))
      local res = node(ctx):call("POST", chain_path(ctx, "/faucet"),
        { json = { address = doc.address, amount = ctx.opts.amount },
          expect = { amount = "scalar", address = "string", hash = "string" } })
      return res, function(d, out)
        out:success("faucet sent " .. d.amount .. " AITBC to " .. d.address .. " (transaction " .. d.hash .. ")")
      end
    end,
  },
  {
    name = "history",
    summary = "The active wallet's transactions, from the chain",
    args = { wallet_arg }, list = "items", paged = "/v1/chain/{chain}/accounts/{address}/transactions", id_field = "hash",
    fields = TX_FIELDS,
    run = function(ctx)
      local doc = W().read(active(ctx, ctx.args.name))
      local res = node(ctx):call("GET", chain_path(ctx, "/accounts/{address}/transactions", { address = doc.address }),
        { expect = { items = { "array", { amount = "scalar", to = "string?", from = "string?" } } } })
      return res, function(d, out)
        if #d.items == 0 then out:print("no transactions") return end
        local rows = {}
        for i, t in ipairs(d.items) do
          local incoming = t.to == doc.address
          rows[i] = { type = t.type, amount = (incoming and "+" or "-") .. t.amount, other = incoming and t.from or (t.to or "-"),
            status = t.status, block = t.block_height or "-" }
        end
        out:print(out:format_table(rows, { "type", "amount", { "other", "counterparty" }, "status", "block" }))
      end
    end,
  },
}

local function new_wallet(ctx, name, phrase, restored)
  local w = W()
  if require("aitbc.sys").stat(w.path(name)) then
    errors.raise("failure", "a wallet named '" .. name .. "' already exists", "choose another --name")
  end
  local doc = w.seal(name, phrase, password(ctx, true))
  local path = w.write(doc)
  local first = not ctx.config.file.active_wallet
  if first or ctx.opts.activate then set_active(ctx, name) end
  return { name = name, address = doc.address, public_key = doc.public_key, path = path, derivation = doc.path,
    active = first or ctx.opts.activate or false, mnemonic = not restored and phrase or nil }
end

local keystore_commands = {
  {
    name = "create",
    creates_config = true,
    summary = "Create a wallet: a new phrase (shown once) and its address",
    id_field = "address",
    args = { { "name_arg", optional = true, help = "wallet name (or --name)" } },
    options = { { "--name", metavar = "NAME", help = "wallet name" }, password_file,
                { "--activate", type = "boolean", help = "make it the active wallet (the first one always is)" } },
    examples = { "aitbc wallet create --name test_wallet" },
    run = function(ctx)
      local name = ctx.opts.name or ctx.args.name_arg
      if not name then errors.raise("usage", "name the wallet: aitbc wallet create --name NAME") end
      local data = new_wallet(ctx, name, require("aitbc.wallet.bip39").generate(24))
      return data, function(d, out)
        out:success("wallet " .. d.name .. " created" .. (d.active and " (active)" or ""))
        out:print(out:format_record({ address = d.address, keystore = d.path }, { "address", "keystore" }))
        out:print("")
        out:print(out:style("Recovery phrase — write these 24 words down, in order, and keep them offline.", "bold"))
        out:print("It is shown only now; anyone with it controls this wallet; it restores the wallet anywhere:")
        words_grid(d.mnemonic, out)
        out:print("Restore with: aitbc wallet restore --name " .. d.name)
      end
    end,
  },
  {
    name = "restore",
    creates_config = true,
    summary = "Restore a wallet from its recovery phrase (same address as before)",
    id_field = "address",
    options = { { "--name", metavar = "NAME", required = true, help = "wallet name" }, password_file,
                { "--mnemonic-file", metavar = "FILE",
                  help = "read the phrase from FILE (else AITBC_WALLET_MNEMONIC or a prompt)" },
                { "--activate", type = "boolean", help = "make it the active wallet" } },
    run = function(ctx)
      local sys = require "aitbc.sys"
      local phrase = sys.getenv("AITBC_WALLET_MNEMONIC")
      if ctx.opts.mnemonic_file then phrase = require("aitbc.config").read_input(ctx.opts.mnemonic_file, "--mnemonic-file") end
      if not phrase or phrase == "" then
        local got, err = sys.read_password("Recovery phrase: ")
        if not got then errors.raise("usage", "the recovery phrase is needed (" .. err .. ")",
          "set AITBC_WALLET_MNEMONIC or pass --mnemonic-file FILE") end
        phrase = got
      end
      local ok, why = require("aitbc.wallet.bip39").to_entropy(phrase)
      if not ok then errors.raise("usage", "not a valid recovery phrase: " .. why) end
      local normalized = {}
      for w in phrase:lower():gmatch("%S+") do normalized[#normalized + 1] = w end
      phrase = table.concat(normalized, " ")
      local data = new_wallet(ctx, ctx.opts.name, phrase, true)
      return data, function(d, out) out:success("wallet " .. d.name .. " restored: " .. d.address) end
    end,
  },
  {
    name = "list",
    summary = "Your wallets and their addresses",
    list = "wallets", id_field = "name", fields = { "name", "address", "active", "created_at" },
    run = function(ctx)
      local w = W()
      local items = json.array()
      for _, name in ipairs(w.names()) do
        local doc = w.read(name)
        items[#items + 1] = { name = name, address = doc.address, active = name == ctx.config.file.active_wallet,
          created_at = doc.created_at }
      end
      return { wallets = items }, function(d, out)
        if #d.wallets == 0 then out:print("no wallets (aitbc wallet create --name NAME)") return end
        local rows = {}
        for i, x in ipairs(d.wallets) do rows[i] = { active = x.active and "*" or "", name = x.name, address = x.address } end
        out:print(out:format_table(rows, { { "active", " " }, "name", { "address", "address", keep = true } }))
      end
    end,
  },
  {
    name = "switch",
    creates_config = true,
    summary = "Make another wallet the active one",
    args = { { "name", help = "wallet name", complete = "wallet" } },
    run = function(ctx)
      local doc = W().read(ctx.args.name)
      set_active(ctx, ctx.args.name)
      return { active = ctx.args.name, address = doc.address }, function(d, out)
        out:success("active wallet: " .. d.active .. " (" .. d.address .. ")")
      end
    end,
  },
  {
    name = "address",
    summary = "The address of the active wallet (or of NAME)",
    args = { wallet_arg }, id_field = "address", fields = { "name", "address", "public_key" },
    run = function(ctx)
      local name = active(ctx, ctx.args.name)
      local doc = W().read(name)
      return { name = name, address = doc.address, public_key = doc.public_key }, function(d, out) out:print(d.address) end
    end,
  },
  {
    name = "export",
    summary = "Copy a wallet's encrypted keystore to a file (mode 0600)",
    args = { { "name", optional = true, help = "wallet name (default: the active one)", complete = "wallet" } },
    options = { { "--output", metavar = "FILE", required = true, help = "where to write it" } },
    run = function(ctx)
      local name = active(ctx, ctx.args.name)
      local doc = W().read(name)
      local path = require("aitbc.config").expand(ctx.opts.output)
      local ok, err = require("aitbc.sys").write_file(path, json.encode(doc, { pretty = true }) .. "\n", tonumber("600", 8))
      if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. err) end
      return { name = name, address = doc.address, path = path }, function(d, out)
        out:success("keystore of " .. d.name .. " written to " .. d.path .. " (still encrypted with its password)")
      end
    end,
  },
  {
    name = "import",
    creates_config = true,
    summary = "Add a wallet from an exported keystore (checks the password)",
    id_field = "address",
    args = { { "file", help = "keystore file" } },
    options = { { "--name", metavar = "NAME", help = "name it (default: its own)" }, password_file },
    run = function(ctx)
      local w = W()
      local doc = json.decode(require("aitbc.config").read_input(ctx.args.file, "keystore file"))
      if type(doc) ~= "table" then errors.raise("failure", ctx.args.file .. " is not a keystore") end
      w.open(doc, password(ctx)) -- refuses a wrong password or an altered file
      doc.name = ctx.opts.name or doc.name
      local path = w.write(doc)
      if not ctx.config.file.active_wallet then set_active(ctx, doc.name) end
      return { name = doc.name, address = doc.address, path = path }, function(d, out)
        out:success("wallet " .. d.name .. " imported: " .. d.address)
      end
    end,
  },
}

return {
  name = "wallet",
  category = "Workflows",
  summary = "Your keys: create, restore, list, switch, show the address, export and import keystores",
  description = "Each wallet is an Ed25519 key derived from a 24-word BIP-39 phrase (SLIP-0010, m/44'/8888'/0'/0'/0'), "
    .. "kept encrypted (Argon2id + XChaCha20-Poly1305) in AITBC_HOME/wallets with mode 0600.",
  commands = table.move(keystore_commands, 1, #keystore_commands, #chain_commands + 1, chain_commands),
}
