--- Spec §4: the GPU marketplace (4.1–4.3), with the spec's command lines as
-- written after `aitbc devnet up`.
local s = require("aitbc.scenario").new("4. GPU marketplace")

s:step("4.1", "Register GPU on marketplace", function(t)
  local r = t:run([[aitbc marketplace gpu register --model "RTX 4090" --vram 24 --hourly-rate 0.5]])
  t:expect_exit(r, 0)
  t.vars.listing = t:expect_match(r.stdout, "listing (gpu_%x+) is live on the network", "a listing_id, live")
  t:expect_match(r.stdout, "gpu%s+1x RTX 4090 %(24 GB%)", "the GPU")
  t:expect_match(r.stdout, "price%s+0%.5 AITBC/hour", "the price")
  r = t:run([[aitbc marketplace gpu register --model "RTX 4090" --vram 24 --hourly-rate 0.5]])
  t:expect_match(r.stdout, "you already listed this GPU as " .. t.vars.listing, "typed twice: one listing, and it says so")
  t:run([[aitbc marketplace gpu register --model "RTX 4090" --vram 24 --hourly-rate 0.7 --region eu]])
end)

s:step("4.2", "List available GPU offers", function(t)
  local r = t:run([[aitbc marketplace offers list --model "RTX 4090"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "LISTING%s+PROVIDER%s+REP%s+GPU%s+VRAM%s+AITBC/H%s+REGION%s+STATUS", "a table")
  t:expect_match(r.stdout, t.vars.listing .. "%s+key_%x+%S*%s+0%.%d+%s+RTX 4090%s+24 GB%s+0%.5%s",
    "the listing, its provider and reputation")
  t:expect(not r.stdout:find("A100"), "only RTX 4090")
end)

s:step("4.3", "Check pricing oracle", function(t)
  local r = t:run([[aitbc marketplace pricing --model "RTX 4090"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "MIN%s+P25%s+MEDIAN%s+AVERAGE%s+P75%s+P90%s+MAX", "the statistical breakdown")
  t:expect_match(r.stdout, "available listings%s+%d+%s+[%d.]+", "figures from the live listings")
  t:expect_match(r.stdout, "suggested: [%d.]+ AITBC/hour", "a suggested price")
  local j = t:json(t:run([[aitbc --output json marketplace pricing --model "RTX 4090"]]))
  t:expect(j.listings.count >= 2 and j.listings.median and j.listings.average, "average and median in JSON")
end)

return s
