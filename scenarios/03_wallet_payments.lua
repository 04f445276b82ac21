--- Spec §3: wallets and money (3.1–3.3), with the spec's command lines as
-- written after `aitbc devnet up` (and AITBC_WALLET_PASSWORD exported, as the
-- README's wallet section says).
local s = require("aitbc.scenario").new("3. Wallet and financial operations")

s:step("3.1", "Create a new wallet", function(t)
  t:setenv("AITBC_WALLET_PASSWORD", "scenario wallet password")
  local r = t:run("aitbc wallet create --name test_wallet")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "wallet test_wallet created", "a success message")
  t.vars.address = t:expect_match(r.stdout, "address%s+(ait1%w+)", "the new address")
  t:expect_match(r.stdout, "write these 24 words down", "instructions to back up the phrase")
  t:expect_match(r.stdout, " 1 %a+%s+ 7 %a+", "the phrase, shown once")
  t:expect(t:run("stat -c %a ~/.aitbc/wallets/test_wallet.json").stdout == "600\n", "keystore mode 0600")
end)

s:step("3.2", "Check wallet balance", function(t)
  local r = t:run("aitbc wallet balance")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "available%s+0 AITBC", "the available balance (a new wallet has none)")
  t:expect_exit(t:run("aitbc wallet faucet --amount 25"), 0)
  r = t:run("aitbc wallet balance")
  t:expect_match(r.stdout, "available%s+25 AITBC", "the balance from the chain after the faucet")
  t:expect_match(r.stdout, "staked%s+0 AITBC", "the staked balance")
  t:expect_match(r.stdout, "total%s+25 AITBC", "the total")
end)

s:step("3.3", "Client job payment", function(t)
  -- the devnet's miners have wallets of their own (their payout addresses) and finish a job in a
  -- moment, so the job below is completed before it is paid
  local r = t:run([[aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']])
  t:expect_exit(r, 0)
  local job_id = t:expect_match(r.stdout, "job_id%s+(%x+)", "the job id (1.1)")
  t:wait_for("a miner to complete it", function()
    return t:run("aitbc client status " .. job_id).stdout:find("status%s+completed")
  end, 60)
  r = t:run("aitbc client pay " .. job_id .. " --amount 10")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "transaction%s+(%x+)", "the transaction hash")
  t:expect_match(r.stdout, "payment status%s+funded, then released", "funded, then released to the miner")
  t:expect_match(r.stdout, "released to%s+ait1%w+ %(miner [%w-]+%)", "the miner paid")
  t:expect_match(r.stderr, "payment funded %(block %d+%).*payment released", "funded, then released, as it happened")
  local st = t:json(t:run("aitbc --output json client status " .. job_id))
  t:expect(st.payment_status == "released" and st.payment_id and st.settlement_id, "the job's status shows the payment")
  t:expect_match(t:run("aitbc wallet balance").stdout, "available%s+15 AITBC", "the wallet paid 10 of its 25")
  local again = t:run("aitbc client pay " .. job_id .. " 1")
  t:expect_exit(again, 1)
  t:expect_match(again.stderr, "already has a payment", "a job is paid once")

  -- paid as it is submitted: held, offered to no miner, until the escrow is funded; then it runs
  r = t:run([[aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}' --pay 5]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "payment%s+5 AITBC, funded", "funded before any miner takes it")
  local paid_id = t:expect_match(r.stdout, "job_id%s+(%x+)", "its job id")
  t:wait_for("the miner to complete it and be paid", function()
    return t:json(t:run("aitbc --output json client status " .. paid_id)).payment_status == "released"
  end, 60)

  -- a job no miner here serves stays queued: its escrow waits; canceled, it comes back
  local job = t:json(t:run([[aitbc --output json client submit --type inference --model phi3 --data '{"prompt":"paid job"}']]))
  t:expect_match(t:run("aitbc client pay " .. job.job_id .. " --amount 2").stdout, "payment status%s+funded", "held in escrow")
  t:expect_match(t:run("aitbc wallet balance").stdout, "in escrow%s+2 AITBC", "shown as in escrow")
  t:expect_exit(t:run("aitbc client cancel " .. job.job_id), 0)
  t:wait_for("the refund", function()
    return t:json(t:run("aitbc --output json client status " .. job.job_id)).payment_status == "refunded"
  end, 15)
  t:expect_match(t:run("aitbc wallet balance").stdout, "available%s+10 AITBC", "25 - 10 - 5, the refund back")
end)

return s
