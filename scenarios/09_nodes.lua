--- Spec §9: multi-chain node management (9.1–9.3), with the spec's command
-- lines as written after `aitbc devnet up`, which registered its node as
-- "devnet".  9.1's 10.0.0.5 is only stored; it is never contacted: for 9.2
-- the user points us-east-1 at a node this machine reaches (the devnet's),
-- and for 9.3 starts two more nodes — one following the devnet's chain, one
-- keeping a chain of its own — so that the matrix shows real states.
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local s = require("aitbc.scenario").new("9. Multi-chain node management")

--- Starts `aitbc serve ARGS` in the background; its URL.
local function serve(t, name, args)
  local file = t.home .. "/" .. name .. ".url"
  t:spawn("aitbc serve --listen 127.0.0.1:0 --data-dir " .. name .. " --url-file " .. file .. " " .. args,
    { log = t.home .. "/" .. name .. ".log" })
  return t:wait_for(name .. " to listen", function()
    local text = sys.read_file(file)
    return text and text:find("\n") and text:gsub("%s+$", "")
  end, 30)
end

s:step("9.1", "Add node configuration", function(t)
  local r = t:run([[aitbc node add --name "us-east-1" --host "10.0.0.5" --port 8080 --type "validator"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "node us%-east%-1 added successfully: http://10%.0%.0%.5:8080 %(validator%)", "added")
  local doc = json.decode(sys.read_file(t.home .. "/.aitbc/nodes.json") or "")
  local stored
  for _, n in ipairs(type(doc) == "table" and doc.nodes or {}) do if n.name == "us-east-1" then stored = n end end
  t:expect(stored and stored.host == "10.0.0.5" and stored.port == 8080 and stored.type == "validator",
    "stored in ~/.aitbc/nodes.json")
  local list = t:run("aitbc node list")
  t:expect_match(list.stdout, "devnet%s+http://127%.0%.0%.1:%d+%s+validator", "devnet up registered its node")
  t:expect_match(list.stdout, "us%-east%-1%s+http://10%.0%.0%.5:8080%s+validator", "the new node")
end)

s:step("9.2", "Test node connectivity", function(t)
  -- 10.0.0.5 is not this machine's to reach: us-east-1 becomes the devnet's node
  local url = t:run("aitbc config get url").stdout:gsub("%s+$", "")
  local port = t:expect_match(url, "^http://127%.0%.0%.1:(%d+)$", "the devnet's URL")
  t:expect_exit(t:run("aitbc node remove us-east-1"), 0)
  t:expect_exit(t:run("aitbc node add --name us-east-1 --host 127.0.0.1 --port " .. port .. " --type validator"), 0)
  local r = t:run([[aitbc node test --node "us-east-1"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "latency%s+min [%d.]+ ms · p50 [%d.]+ ms · p95 [%d.]+ ms · max [%d.]+ ms", "latency metrics")
  t:expect_match(r.stdout, "version%s+aitbc %d+%.%d+%.%d+", "the software version")
  t:expect_match(r.stdout, "ait%-devnet%s+%d+%s+%x+%s+synced", "the synced block height")
  t:expect_match(r.stdout, "us%-east%-1 is reachable and healthy", "reachable and healthy")
  t:expect_exit(t:run("aitbc node add --name gone --host 127.0.0.1 --port 9"), 0)
  local gone = t:run("aitbc node test --node gone")
  t:expect_exit(gone, 5)
  t:expect_match(gone.stderr, "node gone %(http://127%.0%.0%.1:9%) is unreachable", "an unreachable node is a failure")
end)

s:step("9.3", "List hosted chains", function(t)
  local devnet = t:run("aitbc config get url").stdout:gsub("%s+$", "")
  t:expect_exit(t:run("aitbc node add follower " .. serve(t, "follower", "--follow " .. devnet)), 0)
  t:expect_exit(t:run("aitbc node add health " .. serve(t, "health", "--chains ait-healthchain") ..
    " --type validator"), 0)
  local r
  local deadline = sys.monotonic() + 30
  repeat
    r = t:run("aitbc node chains")
    if not r.stdout:find("follower\tsynced") then sys.sleep(0.2) end
  until r.stdout:find("follower\tsynced") or sys.monotonic() > deadline
  t:expect(r.stdout:find("follower\tsynced"), "the follower catches up; the last 'node chains':\n" .. r.stdout .. r.stderr
    .. "\nthe follower's log ends:\n" .. (sys.read_file(t.home .. "/follower.log") or ""):sub(-1500))
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "^NODE\tait%-devnet\tait%-healthchain\n", "nodes as rows, chains as columns")
  if r.stdout:find("\ndevnet\tsynced\tnot hosted\n") then -- a one-node devnet, as after `aitbc devnet up`
    t:expect_match(r.stdout, "\nus%-east%-1\tsynced\tnot hosted\n", "us-east-1")
    t:expect_match(r.stdout, "\nfollower\tsynced\tnot hosted\n", "a follower, synced")
    t:expect_match(r.stdout, "\nhealth\tnot hosted\tsynced\n", "a node with another chain")
  else -- a user who ran §7 and §10 has a two-node devnet: its node follows node 2's ait-healthchain
    t:expect_match(r.stdout, "\ndevnet\tsynced\tsynced\n", "the devnet's node, its own chain and its peer's")
    t:expect_match(r.stdout, "\nus%-east%-1\tsynced\tsynced\n", "us-east-1")
    t:expect_match(r.stdout, "\nfollower\tsynced\t%a[%w ]*\n", "a follower, synced on the devnet's chain")
    t:expect_match(r.stdout, "\nhealth\tnot hosted\tdiverged\n", "another ait-healthchain, by another authority")
  end
  t:expect_match(r.stdout, "\ngone\tunreachable\tunreachable\n", "an unreachable node")
end)

return s
