--- Running scenario files (`aitbc scenario run`): which files the paths
-- name, and what is typed before a file's steps: `aitbc devnet up` (and
-- `devnet down` after), or, with --url, the set-up of a given node.
local errors = require "aitbc.errors"
local sys = require "aitbc.sys"

local runner = {}

--- The scenario files that paths name (a directory: its *.lua files).
function runner.files(paths)
  local files = {}
  for _, p in ipairs(paths) do
    local st = sys.stat(p)
    if not st then errors.raise("not_found", "no such scenario file or directory: " .. p) end
    if st.type == "directory" then
      for _, name in ipairs(sys.list_dir(p)) do
        if name:match("%.lua$") then files[#files + 1] = p:gsub("/$", "") .. "/" .. name end
      end
    else
      files[#files + 1] = p
    end
  end
  return files
end

--- The set-up of a run on its own devnet (no --url): before a file's steps,
-- `aitbc devnet up` typed as the README tells a user; after them `aitbc
-- devnet down`, unless the devnet was running already (--home naming a
-- HOME where one runs: it is left running).
-- A scenario that needs several nodes (cross-chain ones) says so
-- (scenario.new(title, {nodes = 2})): then `aitbc devnet up --nodes N`.
function runner.devnet_setup(nodes)
  local line = "aitbc devnet up" .. ((nodes or 1) > 1 and (" --nodes " .. nodes) or "")
  return { name = line, fn = function(t)
    local r = t:run(line)
    t:expect_exit(r, 0)
    if r.stdout:find("devnet already running", 1, true) then return nil end
    return function(after) after:run("aitbc devnet down") end
  end }
end

--- The set-up of a run against a node at url (--url), typed as the README
-- tells the user of a node they were given an admin key for: the URL in
-- the config, the admin key imported, a client and a miner key made with
-- it and imported, and an Ollama (the simulated one, started here and
-- stopped after the file, when none answers at the ollama_url setting).
function runner.remote_setup(url, admin_key)
  return { name = "aitbc config set url " .. url, fn = function(t)
    t:expect_exit(t:run("aitbc config set url " .. sys.shell_quote(url)), 0)
    if not admin_key then
      t:fail("a run with --url needs the node's admin key in AITBC_SCENARIO_ADMIN_KEY, to make the keys the steps use")
    end
    t:expect_exit(t:run("aitbc auth import-env --key-type admin", { env = { AITBC_ADMIN_KEY = admin_key } }), 0)
    for _, role in ipairs { "client", "miner" } do
      local key = t:api_key(role)
      t:expect_exit(t:run("aitbc auth import-env --key-type " .. role,
        { env = { ["AITBC_" .. role:upper() .. "_KEY"] = key } }), 0)
    end
    if t:run("aitbc ollama models").code ~= 0 then
      local file = t.home .. "/ollama-sim.url"
      t:spawn("aitbc ollama serve-sim --listen 127.0.0.1:0 --url-file " .. sys.shell_quote(file),
        { log = t.home .. "/ollama-sim.log" })
      local sim = t:wait_for("the simulated Ollama", function()
        local text = sys.read_file(file)
        return text and text:find("\n") and text:gsub("%s+$", "")
      end, 15)
      t:expect_exit(t:run("aitbc config set ollama_url " .. sys.shell_quote(sim)), 0)
    end
  end }
end

return runner
