--- Spec §13: node administration (13.1–13.7) after `aitbc devnet up`, the
-- spec's lines as written.  13.1's line goes to ~/backups rather than
-- /backups (outside the run's HOME: a second run would find it there), and
-- a destination nobody can write is refused clearly.
-- 13.6 needs a release channel: the user makes one with this binary
-- (aitbc release keygen/build) and pins it in the devnet node's node.json,
-- as the README's "Updates" section says.
local s = require("aitbc.scenario").new("13. Node administration")

s:step("13.1", "Back up the node", function(t)
  local r = t:run("aitbc admin backup --type full --destination /proc/aitbc-$(date +%Y%m%d)")
  t:expect(r.code ~= 0, "a destination that is not writable is refused")
  t:expect_match(r.stderr, "/proc/aitbc%-%d+", "the error names the destination")
  r = t:run("aitbc admin backup --type full --destination ~/backups/aitbc-$(date +%Y%m%d)")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "backup written to .-aitbc%-%d+", "where it went")
  t:expect_match(r.stdout, "estimated [%d%.]+ [KMG]?B before it started", "the estimate")
  t:expect_match(r.stdout, "node%.db%s+[%d%.]+ [KMG]?B%s+sha256 %x+", "the database with its SHA-256")
  t:expect_match(r.stdout, "node%.key", "the keys (full)")
  t:expect_exit(t:run("aitbc admin backup verify ~/backups/aitbc-$(date +%Y%m%d) --deep"), 0)
  r = t:run("aitbc admin backup --type full --destination ~/backups/aitbc-$(date +%Y%m%d)")
  t:expect(r.code ~= 0, "an existing destination is refused")
end)

s:step("13.2", "Logs of a service", function(t)
  local r = t:run("aitbc admin logs --service coordinator --tail 100 --level error")
  t:expect_exit(r, 0)
  r = t:run("aitbc admin logs --service coordinator --tail 5 --export ~/coordinator.csv")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z?%s+%a+%s+coordinator", "timestamp, level, service")
  t:expect_exit(t:run("test -s ~/coordinator.csv"), 0)
  r = t:run("aitbc admin logs --service no-such-service")
  t:expect_exit(r, 3)
end)

s:step("13.3", "The dashboard", function(t)
  local r = t:run("timeout --preserve-status -s INT 5 aitbc admin monitor --dashboard --refresh 30")
  t:expect_exit(r, 130)
  t:expect_match(r.stdout, "aitbc fleet dashboard", "a frame")
  t:expect_match(r.stdout, "cpu .-mem .-disk", "resources")
  t:expect_match(r.stdout, "chain ait%-devnet%s+height %d+", "the chain")
  t:expect_match(r.stdout, "jobs%s+%d+ running, %d+ queued", "jobs and queue")
  t:expect_match(r.stdout, "miners %d+ of %d+ online", "miners")
  t:expect_match(r.stdout, "services coordinator blockchain%-node marketplace monitoring", "services")
  r = t:run("aitbc admin monitor --once -o json")
  t:expect_exit(r, 0)
  local node = t:json(r).nodes[1]
  -- ok, or degraded when an alert is up (a busy machine's CPU): either way the node answered
  t:expect(node.version and (node.status == "ok" or node.status == "degraded"), "a JSON frame of the node")
end)

s:step("13.4", "Restart a service gracefully", function(t)
  local r = t:run("aitbc admin restart --service blockchain-node --graceful --timeout 300")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "blockchain%-node: stopped taking requests", "shutdown confirmed")
  t:expect_match(r.stdout, "in%-flight work drained", "drained")
  t:expect_match(r.stdout, "health verified", "health verified")
  t:expect_exit(t:run("aitbc admin restart --service no-such-service"), 2)
end)

s:step("13.5", "Status as one JSON document", function(t)
  local r = t:run("aitbc admin status --verbose --format json")
  t:expect_exit(r, 0)
  local d = t:json(r)
  for _, k in ipairs { "services", "health", "chain", "database", "replication", "peers", "resources", "alerts",
    "recent" } do
    t:expect(d[k] ~= nil, "the document has " .. k)
  end
end)

s:step("13.6", "Plan an update", function(t)
  t:expect_exit(t:run("aitbc release keygen --out ~/release.key"), 0)
  local version = t:json(t:run("aitbc -o json version")).version
  t:expect_exit(t:run("aitbc release build --version " .. version .. " --key ~/release.key --out ~/releases"), 0)
  local key = t:json(t:run("aitbc -o json release build --version " .. version
    .. " --key ~/release.key --out ~/releases")).public_key
  t:expect_exit(t:run([[printf '{"release": {"channel": "%s/releases", "public_key": "%s"}}\n' "$HOME" ']] .. key
    .. [[' > ~/.aitbc/devnet/node/node.json]]), 0)
  t:expect_exit(t:run("aitbc admin restart --service all"), 0) -- the node reads node.json at its start
  local r = t:run("aitbc admin update --component coordinator --version latest --dry-run")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "update of coordinator: [%d%.]+ %-> [%d%.]+", "current vs target")
  t:expect_match(r.stdout, "✓ signature", "the signature checked")
  t:expect_match(r.stdout, "✓ schema", "schema compatibility")
  t:expect_match(r.stdout, "✓ configuration", "configuration compatibility")
  t:expect_match(r.stdout, "downtime%s+a new process", "the downtime estimate")
  t:expect_match(r.stdout, "backup%s+a full backup first", "the backup it would make")
  t:expect_match(r.stdout, "rollback", "the rollback plan")
  t:expect_match(r.stdout, "dry run: nothing was changed", "nothing changed")
  r = t:run("aitbc admin update --version 99.0.0 --dry-run")
  t:expect_exit(r, 3)
end)

s:step("13.7", "Users", function(t)
  t:expect_exit(t:run("aitbc admin users --action create --name alice --role miner"), 0)
  local r = t:run("aitbc admin users --action list --role miner --status active")
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "alice", "the new user")
  t:expect_exit(t:run("aitbc admin users --action suspend --user alice --reason \"left\""), 0)
  r = t:run("aitbc admin users --action list --role miner --status active")
  t:expect(not r.stdout:find("alice", 1, true), "a suspended user is not active")
  t:expect_exit(t:run("aitbc admin users --action export --export ~/users.csv"), 0)
  t:expect_exit(t:run("grep -q alice ~/users.csv"), 0)
end)

return s
