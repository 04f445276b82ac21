--- Spec §6: governance (6.1–6.3), with the spec's command lines as written
-- after `aitbc devnet up` (whose chain votes for 10 blocks of 2 s) and
-- AITBC_WALLET_PASSWORD exported, as the README's wallet section says.  The
-- user first gets coins from the devnet's faucet and stakes the 500 they
-- vote with; a second proposal, with --set, shows a passed change in
-- `aitbc chain params`.
local s = require("aitbc.scenario").new("6. Governance and DAO")

s:step("6.1", "Create a proposal", function(t)
  t:setenv("AITBC_WALLET_PASSWORD", "scenario wallet password")
  t:expect_exit(t:run("aitbc wallet create --name voter"), 0)
  t:expect_exit(t:run("aitbc wallet switch voter"), 0) -- (a user of §3 and §4 has another wallet active)
  t:expect_exit(t:run("aitbc wallet faucet --amount 2000"), 0)
  t:expect_exit(t:run("aitbc wallet stake 500 --wait"), 0)
  local r = t:run([[aitbc governance propose --title "Increase Miner Rewards" --description "Proposal to increase ]]
    .. [[base reward by 5%" --amount 1000]])
  t:expect_exit(r, 0)
  t.vars.proposal = t:expect_match(r.stdout, "proposal id%s+(prop_%x+)", "the proposal_id")
  t:expect_match(r.stdout, "voting%s+blocks %d+–%d+ %(10 blocks%)", "the voting timeline (start, end, blocks)")
  t:expect_match(r.stdout, "ends about %d%d%d%d%-%d%d%-%d%dT", "when the voting ends")
  t:expect_match(r.stdout, "deposit%s+1000 AITBC", "the deposit, locked")
  -- the change the title speaks of, as a proposal that sets it
  r = t:run([[aitbc governance propose --title "Miner reward +5%" --description "Pay 1.05 AITBC a job" ]]
    .. [[--amount 100 --set miner_reward=1.05]])
  t:expect_exit(r, 0)
  t.vars.change = t:expect_match(r.stdout, "proposal id%s+(prop_%x+)", "a second proposal_id")
  t:expect_match(r.stdout, "changes%s+miner_reward = 1%.05", "the parameter it changes")
end)

s:step("6.2", "Vote on a proposal", function(t)
  local r = t:run("aitbc governance vote " .. t.vars.proposal .. [[ --vote "yes" --amount 500]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "voted yes with 500 AITBC on " .. t.vars.proposal, "the vote")
  local hash = t:expect_match(r.stdout, "transaction%s+(%x+) %(block %d+%)", "the transaction hash, in a block")
  r = t:run("aitbc chain tx " .. hash)
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "type%s+gov_vote", "a vote on chain")
  t:expect_match(r.stdout, "status%s+included %(block %d+%)", "recorded in a block")
  t:expect_match(r.stdout, "vote%s+yes with 500 AITBC", "the choice and the power")
  t:expect_exit(t:run("aitbc governance vote " .. t.vars.change .. [[ --vote "yes" --amount 500]]), 0)
end)

s:step("6.3", "Check proposal results", function(t)
  local r = t:run("aitbc governance result " .. t.vars.proposal)
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "yes%s+500 AITBC", "the yes tally")
  t:expect_match(r.stdout, "no%s+0 AITBC", "the no tally")
  t:expect_match(r.stdout, "abstain%s+0 AITBC", "the abstain tally")
  t:expect_match(r.stdout, "quorum%s+33%.4%% of the stake must vote: reached", "the quorum status")
  -- once the period has ended: the decision
  r = t:run("aitbc governance result " .. t.vars.proposal .. " --wait", { timeout = 90 })
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "PASSED", "the final decision")
  t:expect_match(r.stdout, "deposit%s+returned to ait1", "the deposit returned")
  r = t:run("aitbc governance result " .. t.vars.change .. " --wait", { timeout = 90 })
  t:expect_match(r.stdout, "applied%s+miner_reward = 1%.05 from block %d+", "what it changed")
  r = t:run("aitbc chain params")
  t:expect_match(r.stdout, "miner_reward%s+1%.05 AITBC%s+block %d+%s+" .. t.vars.change, "the change in chain params")
end)

return s
