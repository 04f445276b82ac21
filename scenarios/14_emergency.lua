--- Spec §14: emergencies (14.1–14.3) after `aitbc devnet up`, the spec's
-- lines as written.
local s = require("aitbc.scenario").new("14. Emergency operations")

s:step("14.1", "Emergency restart of everything", function(t)
  local r = t:run("aitbc admin restart --service all --emergency --force")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "emergency: the old process %d+ was stopped at once", "an immediate restart")
  t:expect_match(r.stdout, "integrity checks at start", "integrity checked at start")
  t:expect_match(r.stdout, "health verified", "healthy again")
  r = t:run("aitbc admin logs --level warn --since \"5 minutes ago\"")
  t:expect_match(r.stdout, "emergency restart", "logged")
end)

s:step("14.2", "Critical log entries for cron", function(t)
  local r = t:run("aitbc admin logs --level critical --since \"1 hour ago\" --alert")
  t:expect(r.code == 0 or r.code == 1, "exit 0 (none) or 1 (some)")
  t:expect_match(r.stdout .. r.stderr, "critical", "the analysis")
end)

s:step("14.3", "A comprehensive health report", function(t)
  local r = t:run("cd ~ && aitbc admin status --health-check --comprehensive --report")
  t:expect(r.code == 0 or r.code == 1, "0, or 1 when a critical check fails")
  t:expect_match(r.stdout, "score %d+/100", "a score")
  t:expect_match(r.stdout, "database integrity", "the database checked")
  t:expect_match(r.stdout, "chain ait%-devnet", "the chain verified")
  t:expect_match(r.stdout, "report: aitbc%-health%-[%d%-]+%.md and aitbc%-health%-[%d%-]+%.json", "the report files")
  t:expect_exit(t:run("ls ~/aitbc-health-*.md ~/aitbc-health-*.json"), 0)
end)

return s
