--- Spec §11: multimodal agents (11.1–11.2), with the spec's command lines
-- as written after `aitbc devnet up`.  image.jpg is a small bar chart (a
-- real JPEG the user has; written here from base64).
local s = require("aitbc.scenario").new("11. Multimodal agents")

local IMAGE = [[
/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0a
HBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIy
MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjL/wAARCABAAGADASIA
AhEBAxEB/8QAGAAAAwEBAAAAAAAAAAAAAAAAAAcIBgX/xAA1EAABAQUFBQUHBQAAAAAAAAAAAgED
BAWzBgcRNnUSExQ3gxchMVWkFiVFhKHD0kNSYmbj/8QAGgEAAgMBAQAAAAAAAAAAAAAAAAMCBAUB
Bv/EAC0RAAEDAwIDBgcBAAAAAAAAAAEAAgMEBREzcTE0sQYTIUGB0TI1Q1FhcpHB/9oADAMBAAIR
AxEAPwB/gAAhAAZy3c0jJNYuYTCXvtzFOt3sPNlisMXiUt7msazwa0ZFGZHtjHEkD+rjjgErRgTn
2n2x849M5/A2t2VsZ/aG0sTCTWP4hwiDU9Sncu0YKYtDMcUpY3wa0057LUQxmRxGBv7JDahrjgJr
gAGQrCAAAQgAAEIAABCDI3n8upr0ayDXGRvP5dTXo1kFmi5mP9h1UJPgOynMY1zGcYzT11HYuRjX
MZxjNPXUdntLnykmyzodQJ6AAHglqIM5NLd2ak0xey+YTLcxTrDbd7h4rDFjFM72Jazwaw0ZOd5/
MWa9Gkg0rXRsq5jHISABnw3CTNIY25Cb3afY7zj0z78DUQkU5joNxFwy9tw/dpeu14NZtJUzFjcG
97O5pJZUdlMnSTT3FNJZultipGNdGScnzx7KEEzpCQV1yc+0+2PnHpnP4FGEijrDBFL3neNBxjiM
/dRqnObjBTAs/eLauOtLKoSJmu24fxjp08Tw7pm0lS2MazFicWdzRmXn8upr0ayBFWUzjJNQcVEj
1vP5dTXo1kDbhDHFWwCNoHiOAx5qMTi6N2SpzGNcxnGM09dR2LkY1zGcYzT11HZr3PlJNkiHUCeg
GRtxbj2M4D3dxnF7z9fd7Gzs/wAW447X0Mh24f131v8AmeQhttVMwSRtyD+R7q+6ZjTglN0nO8/m
LNejSQOmxdqva+TvphwXCbuIU43e93mOCUqxxwZ+76CWvP5izXo0kGlZInRVj2PGCAeoSakh0YIW
RKjspk6Sae4ppJcKjspk6Sae4ppLXaHSZuoUnErrkildEii+zv1fT/VKr8l17KZxkmoOKiR63n8u
pr0ayBFWUzjJNQcVEj1vP5dTXo1kDbpz0G46qMGk5TmMa5jOMZp66jsXIxrmM4xmnrqOzSufKSbJ
MOoF178PgPzH2xRDdvw+A/MfbFELs/JM9epXajUKelzGTozUF03Yubz+Ys16NJAxrmMnRmoLpuxc
3n8xZr0aSCjRfNJdj1CbJoNWRKjspk6Sae4ppJcKjspk6Sae4ppOdodJm6KTiV//2Q==
]]

s:step("11.1", "Process multimodal input", function(t)
  t:expect_exit(t:run("base64 -d > image.jpg <<'B64'\n" .. IMAGE .. "B64"), 0)
  local created = t:run([[aitbc -o json agent create --name "chart_reader" --type "chat" --model llama3 --vision-model llava]])
  t:expect_exit(created, 0)
  t.vars.agent_id = t:json(created).agent_id
  local r = t:run("aitbc multimodal process --agent-id " .. t.vars.agent_id .. [[ --image image.jpg --text "Analyze this chart"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stderr, "image%.jpg: JPEG, 96x64", "the image, as sent")
  t:expect_match(r.stdout, "submitted: job %x+ %(multimodal%)", "a submission confirmation")
  t:expect_match(r.stdout, "Analysis\n[^\n]*image 1 is a 96x64 JPEG", "the analysis of the image and the text together")
end)

s:step("11.2", "Benchmark multimodal agent", function(t)
  local r = t:run("aitbc multimodal benchmark --agent-id " .. t.vars.agent_id)
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "INPUT%s+TASKS%s+ACCURACY%s+LATENCY P50/P95%s+TOKENS/S%s+TTFT P50", "a report per input type")
  t:expect_match(r.stdout, "text%s+%d+%s+%d+%%", "text: tasks and accuracy")
  t:expect_match(r.stdout, "vision%s+%d+%s+%d+%%", "vision: tasks and accuracy")
  t:expect_match(r.stdout, "audio%s+%-%s+unsupported", "audio: unsupported, not a zero or a pass")
end)

return s
