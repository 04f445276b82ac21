--- Running scenario files (`aitbc scenario run`): which files the paths
-- name, and the ephemeral node a run without --url starts and stops.
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

--- An ephemeral node for a run without --url: a temporary data directory,
-- a free loopback port, its admin key.  Returns {url, admin_key, stop()}.
function runner.ephemeral_node(exe, dir)
  local proc, err = sys.spawn { argv = { exe, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir },
    stdin = "null", stdout = "pipe", stderr = "pipe", env = { AITBC_HOME = dir } }
  if not proc then errors.raise("failure", "cannot start a node: " .. err) end
  local line = ""
  while not line:find("\n") do
    local chunk = proc:read(15)
    if not chunk then
      local _, _, stderr = proc:communicate(nil, 5)
      errors.raise("failure", "the ephemeral node did not start: " .. tostring(stderr))
    end
    line = line .. chunk
  end
  local node = { url = line:match("listening on (%S+)"), proc = proc }
  node.admin_key = (assert(sys.read_file(dir .. "/admin.key")):gsub("%s+$", ""))
  function node.stop()
    proc:kill(15)
    proc:communicate(nil, 20)
  end
  return node
end

return runner
