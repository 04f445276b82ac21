--- aitbc governance: proposals and stake-weighted votes on the chain (spec §6).

local function G() return require "aitbc.governance" end

local password_file = { "--password-file", metavar = "FILE",
  help = "wallet password from FILE (else AITBC_WALLET_PASSWORD or a prompt)" }
local proposal_arg = { "proposal_id", help = "the proposal's id (prop_...)" }

local function password(ctx)
  return require("aitbc.secrets.password").get("wallet", ctx.opts.password_file, false, ctx.out.format == "table")
end

local VIEW_FIELDS = { "proposal_id", "chain_id", "tx_hash", "proposer", "title", "description", "deposit", "changes",
  "status", "submitted_at", "timeline", "quorum", "threshold", "tally", "decision", "voter" }

local function pct(share) return string.format("%.1f%%", (share or 0) * 100) end

local function changes_text(changes)
  local names = {}
  for name in pairs(type(changes) == "table" and changes or {}) do names[#names + 1] = name end
  table.sort(names)
  if #names == 0 then return "none (a text proposal: it changes no parameter)" end
  local parts = {}
  for i, name in ipairs(names) do parts[i] = name .. " = " .. tostring(changes[name]) end
  return table.concat(parts, ", ")
end

local function voting_text(t, status)
  if not t.start_height then return "opens when a block includes the proposal" end
  local text = string.format("blocks %d–%d (%d blocks)", t.start_height, t.end_height, t.voting_period)
  if status == "active" and t.blocks_left then
    text = text .. string.format(", %d left%s", t.blocks_left, t.ends_at and (", ends about " .. t.ends_at) or "")
  end
  return text
end

local STATUS_WORDS = { pending = "pending (not in a block yet)", active = "active: voting open",
  passed = "PASSED", rejected = "REJECTED" }

local function render_decision(d, out)
  local dec = d.decision
  if not dec then return end
  local what = dec.outcome == "passed" and next(dec.changes or {}) and
    (changes_text(dec.changes) .. " from block " .. tostring(dec.applies_from)) or
    (dec.outcome == "passed" and "nothing to change (a text proposal)" or "nothing changes")
  out:print(out:format_record({
    decision = string.format("%s at block %s%s", dec.outcome, tostring(dec.decided_height),
      dec.quorum_reached and "" or " (quorum not reached)"),
    applied = what,
    deposit = dec.deposit == "returned" and ("returned to " .. d.proposer) or "burned (quorum not reached)",
    tally_tx = dec.tx_hash,
  }, { "decision", "applied", "deposit", { "tally_tx", "tally transaction" } }))
end

--- The tally, turnout against quorum, and the decision.
local function render_result(d, out)
  out:print(out:style(d.proposal_id, "bold") .. "  " .. d.title .. " — " .. (STATUS_WORDS[d.status] or d.status))
  local t = d.tally
  local turnout = tonumber(t.turnout) or 0
  local rows = {}
  for _, choice in ipairs { "yes", "no", "abstain" } do
    local power = tonumber(t[choice]) or 0
    rows[#rows + 1] = { choice = choice, power = t[choice] .. " AITBC",
      share = turnout > 0 and pct(power / turnout) or "-" }
  end
  out:print(out:format_table(rows, { "choice", "power", { "share", "of turnout" } }))
  out:print(out:format_record({
    turnout = string.format("%s of %s AITBC staked (%s), %d voter(s)", t.turnout, t.total_power, pct(t.turnout_share),
      t.voters or 0),
    quorum = string.format("%s of the stake must vote: %s", pct(tonumber(d.quorum)),
      t.quorum_reached and "reached" or "not reached"),
    threshold = "more than " .. pct(tonumber(d.threshold)) .. " of yes and no must be yes",
    changes = changes_text(d.changes),
    voting = voting_text(d.timeline, d.status),
  }, { "turnout", "quorum", "threshold", "changes", "voting" }))
  render_decision(d, out)
end

local function render_proposed(d, out)
  local p = d.proposal or {}
  out:success("proposal " .. d.proposal_id .. " submitted" .. (p.title and (": " .. p.title) or ""))
  out:print(out:format_record({
    proposal_id = d.proposal_id,
    tx = d.tx_hash .. (d.block_height and (" (block " .. d.block_height .. ")") or " (sealed in the next block)"),
    deposit = d.deposit .. " AITBC (returned when quorum is reached, burned when not)",
    changes = changes_text(d.changes),
    voting = p.timeline and voting_text(p.timeline, p.status) or "opens when a block includes the proposal",
    snapshot = p.timeline and p.timeline.snapshot_height and
      string.format("the stake at block %d votes (%s AITBC in all)", p.timeline.snapshot_height, p.tally.total_power),
    rules = p.quorum and string.format("quorum %s of the stake; more than %s of yes and no must be yes",
      pct(tonumber(p.quorum)), pct(tonumber(p.threshold))),
  }, { { "proposal_id", "proposal id" }, { "tx", "transaction" }, "deposit", "changes", "voting", "snapshot", "rules" }))
  if p.tally and tonumber(p.tally.total_power) == 0 then
    out:warn("nobody had stake at the snapshot: this proposal cannot reach quorum, and its deposit will burn")
  end
  out:print(out:style("next: aitbc governance vote " .. d.proposal_id .. ' --vote yes --amount AITBC  ·  '
    .. "aitbc governance result " .. d.proposal_id, "dim"))
end

local function render_vote(d, out)
  out:success(string.format("voted %s with %s AITBC on %s%s", d.choice, d.power, d.proposal_id,
    d.replaced and " (it replaces your earlier vote)" or ""))
  out:print(out:format_record({
    tx = d.tx_hash .. (d.block_height and (" (block " .. d.block_height .. ")") or " (sealed in the next block)"),
    voter = d.voter, chain = d.chain_id,
  }, { { "tx", "transaction" }, "voter", "chain" }))
  out:print(out:style("on chain: aitbc chain tx " .. d.tx_hash .. "  ·  tally: aitbc governance result " .. d.proposal_id,
    "dim"))
end

return {
  name = "governance",
  category = "Workflows",
  summary = "Proposals and stake-weighted votes on the chain; passed proposals change its parameters",
  description = "A proposal locks a deposit from the active wallet and may change chain parameters (aitbc chain "
    .. "params). Its voting opens in the block that includes it: the stake each address had at the block before "
    .. "(the snapshot) is its voting power, and stake that voted stays staked until the tally. The block that closes "
    .. "the voting tallies it: it passes when the turnout reaches the quorum and more than the threshold of yes and "
    .. "no votes are yes; its changes apply from the next block; the deposit returns when quorum was reached and "
    .. "is burned otherwise.",
  commands = {
    {
      name = "propose",
      summary = "Submit a proposal: its deposit is locked, its voting opens with the next block",
      options = {
        { "--title", metavar = "TEXT", help = "what it is, in a line (up to 140 bytes)" },
        { "--description", metavar = "TEXT", help = "what it does and why" },
        { "--amount", metavar = "AITBC", help = "the deposit (default: the chain's min_deposit)" },
        { "--set", metavar = "NAME=VALUE", repeatable = true,
          help = "a parameter it changes when it passes, e.g. miner_reward=1.05 (see aitbc chain params)" },
        { "--parameter", metavar = "NAME", help = "with --value: the older CLI's way to say --set NAME=VALUE" },
        { "--value", metavar = "VALUE", help = "with --parameter" },
        { "--no-wait", type = "boolean", help = "return once the node accepts it, before a block includes it" },
        password_file,
      },
      id_field = "proposal_id",
      fields = { "proposal_id", "tx_hash", "status", "block_height", "proposer", "chain_id", "deposit", "changes",
        "proposal" },
      examples = { [[aitbc governance propose --title "Increase Miner Rewards" --description "Proposal to increase base ]]
          .. [[reward by 5%" --amount 1000]],
        [[aitbc governance propose --title "Miner reward 1.05" --description "5% more" --amount 1000 --set miner_reward=1.05]] },
      run = function(ctx)
        local o = ctx.opts
        local changes = {}
        for _, c in ipairs(o.set or {}) do changes[#changes + 1] = c end
        if o.parameter or o.value then
          if not (o.parameter and o.value) then
            require("aitbc.errors").raise("usage", "--parameter and --value go together", "or use --set NAME=VALUE")
          end
          changes[#changes + 1] = o.parameter .. "=" .. o.value
        end
        return G().propose(ctx, { title = o.title, description = o.description, deposit = o.amount, changes = changes,
          password = password(ctx), wait = not o.no_wait }), render_proposed
      end,
    },
    {
      name = "vote",
      summary = "Vote yes, no or abstain with your stake (a later vote replaces the earlier one)",
      args = { proposal_arg, { "choice", optional = true, help = "yes, no or abstain (for and against too)" } },
      options = {
        { "--vote", metavar = "CHOICE", help = "yes, no or abstain" },
        { "--amount", metavar = "AITBC", help = "stake to vote with (default: all you may: your stake at the "
          .. "proposal's snapshot, at most what is staked now)" },
        { "--no-wait", type = "boolean", help = "return once the node accepts it, before a block includes it" },
        password_file,
      },
      id_field = "tx_hash",
      fields = { "proposal_id", "choice", "power", "voter", "tx_hash", "status", "block_height", "chain_id", "replaced" },
      examples = { [[aitbc governance vote prop_3f9a1c2b4d5e --vote "yes" --amount 500]],
                   "aitbc governance vote prop_3f9a1c2b4d5e for" },
      run = function(ctx)
        local choice = ctx.opts.vote or ctx.args.choice
        if ctx.opts.vote and ctx.args.choice and G().choice(ctx.opts.vote) ~= G().choice(ctx.args.choice) then
          require("aitbc.errors").raise("usage", "the vote is given twice, differently: --vote " .. ctx.opts.vote
            .. " and " .. ctx.args.choice)
        end
        if not choice then require("aitbc.errors").raise("usage", "say how you vote: --vote yes, no or abstain") end
        return G().vote(ctx, ctx.args.proposal_id, choice, ctx.opts.amount, { password = password(ctx),
          wait = not ctx.opts.no_wait }), render_vote
      end,
    },
    {
      name = "result",
      summary = "The tally: yes, no and abstain, turnout against quorum, and the decision once voting ended",
      args = { proposal_arg },
      options = {
        { "--wait", type = "boolean", help = "wait until it is decided" },
        { "--timeout", type = "number", min = 1, metavar = "SECONDS",
          help = "with --wait: how long (default: its blocks left at the block time, plus a minute)" },
      },
      id_field = "proposal_id", fields = VIEW_FIELDS,
      examples = { "aitbc governance result prop_3f9a1c2b4d5e", "aitbc governance result prop_3f9a1c2b4d5e --wait" },
      run = function(ctx)
        return G().result(ctx, ctx.args.proposal_id, { wait = ctx.opts.wait, timeout = ctx.opts.timeout,
          on_progress = function(v)
            ctx.out:info(string.format("  %s: %s block(s) left", v.status, tostring(v.timeline.blocks_left)))
          end }), render_result
      end,
    },
    {
      name = "show",
      summary = "A proposal: its text, changes, timeline, tally and your voting power",
      args = { proposal_arg },
      id_field = "proposal_id", fields = VIEW_FIELDS,
      run = function(ctx)
        local view = G().show(ctx, ctx.args.proposal_id, require("aitbc.wallet").active_address(ctx))
        return view, function(d, out)
          render_result(d, out)
          out:print("")
          out:print(d.description)
          local v = d.voter
          if v then
            out:print("")
            out:print(out:format_record({ wallet = v.address, power = v.power and (v.power .. " AITBC (stake at the "
              .. "snapshot " .. v.snapshot_stake .. ", staked now " .. v.staked .. ")") or "-",
              vote = v.vote and (v.vote.choice .. " with " .. v.vote.power .. " AITBC") or "none yet" },
              { "wallet", { "power", "your voting power" }, { "vote", "your vote" } }))
          end
        end
      end,
    },
    {
      name = "list",
      summary = "Proposals, newest first",
      options = {
        { "--status", choices = { "all", "pending", "active", "passed", "rejected" }, default = "all",
          help = "which ones" },
      },
      list = "items", paged = "/v1/chain/{chain}/proposals", id_field = "proposal_id", fields = VIEW_FIELDS,
      run = function(ctx)
        local page = G().list(ctx, ctx.opts.status, ctx.opts.limit, ctx.opts.offset)
        return page, function(d, out)
          if #d.items == 0 then
            out:print("no proposals" .. (ctx.opts.status ~= "all" and (" " .. ctx.opts.status) or "")
              .. ": aitbc governance propose --title ... --description ...")
            return
          end
          local rows = {}
          for i, p in ipairs(d.items) do
            rows[i] = { proposal_id = p.proposal_id, status = p.status, title = p.title,
              tally = string.format("%s / %s / %s", p.tally.yes, p.tally.no, p.tally.abstain),
              ends = p.timeline.end_height and tostring(p.timeline.end_height) or "-" }
          end
          out:print(out:format_table(rows, { { "proposal_id", "proposal", keep = true }, "status", "title",
            { "tally", "yes / no / abstain" }, { "ends", "ends (block)" } }))
          out:print(out:style(string.format("%d of %d", #d.items, d.total), "dim"))
        end
      end,
    },
  },
}
