--- aitbc scenario: run QA scenario scripts (scenarios/NN_*.lua).
local errors = require "aitbc.errors"

local function run(ctx)
  local scenario = require "aitbc.scenario"
  local runner = require "aitbc.scenario.runner"
  local sys = require "aitbc.sys"
  local out = ctx.out
  local tap = ctx.opts.tap
  local human = out.format == "table" and not tap
  local files = runner.files(#ctx.args.paths > 0 and ctx.args.paths or { "scenarios" })
  local exe = assert(sys.exe_path())
  local bindir = exe:match("^(.*)/[^/]*$")
  local reports, passed, failed, skipped, n = {}, 0, 0, 0, 0
  local url = ctx.globals.url or ((sys.getenv("AITBC_URL") or "") ~= "" and sys.getenv("AITBC_URL")) or nil
  local remote = url and runner.remote_setup(url, sys.getenv("AITBC_SCENARIO_ADMIN_KEY"))
  if tap then out:print("TAP version 13") end
  local ran, failure = pcall(function()
    for _, file in ipairs(files) do
      local s, err = scenario.load(file)
      if not s then errors.raise("usage", "cannot load scenario " .. file .. ": " .. tostring(err)) end
      local home = ctx.opts.home or assert(sys.tempdir("aitbc-scenario"))
      if human then out:print(out:style(file, "bold") .. " — " .. s.title) end
      local setup = remote or runner.devnet_setup(s.nodes)
      local results = scenario.execute(s, { bindir = bindir, home = home, cwd = home, setup = setup }, function(r)
        n = n + 1
        if r.status == "pass" then passed = passed + 1
        elseif r.status == "skip" then skipped = skipped + 1
        else failed = failed + 1 end
        if tap then
          local line = string.format("%s %d - %s %s", r.status == "fail" and "not ok" or "ok", n, r.id, r.name)
          if r.status == "skip" then line = line .. " # SKIP " .. r.message end
          out:print(line)
          if r.status == "fail" then out:print("  # " .. r.message:gsub("\n", "\n  # ")) end
        elseif human then
          local mark = ({ pass = out:style("ok  ", "green"), fail = out:style("FAIL", "red"),
                          skip = out:style("skip", "yellow") })[r.status]
          out:print(string.format("  %s %s %s (%d ms)", mark, r.id, r.name, math.floor(r.seconds * 1000 + 0.5)))
          if r.message then out:print("       " .. r.message:gsub("\n", "\n       ")) end
        end
      end)
      if not ctx.opts.home and not ctx.opts.keep then sys.remove_tree(home) end
      reports[#reports + 1] = { file = file, title = s.title, results = results }
    end
  end)
  if not ran then error(failure, 0) end
  if tap then out:print("1.." .. n) end
  if ctx.opts.junit then
    local ok, err = sys.write_file(ctx.opts.junit, scenario.junit(reports), tonumber("644", 8))
    if not ok then errors.raise("failure", "cannot write " .. ctx.opts.junit .. ": " .. err) end
  end
  if failed > 0 then ctx.exit_code = 1 end
  local summary = { passed = passed, failed = failed, skipped = skipped, files = reports }
  return summary, function(d, o)
    local line = string.format("%d passed, %d failed", d.passed, d.failed)
    if d.skipped > 0 then line = line .. string.format(", %d skipped", d.skipped) end
    if tap then line = "# " .. line end
    o:print(line)
  end
end

return {
  name = "scenario",
  category = "Tools",
  summary = "Run QA scenario scripts (the spec's scenarios, step by step)",
  commands = {
    {
      name = "run",
      summary = "Run scenario files (default: every file in scenarios/)",
      description = "Each file runs as a new user in a fresh HOME (or --home), which is also its working "
        .. "directory, with none of the caller's AITBC_* or OLLAMA_HOST variables. Before its steps the run types "
        .. "'aitbc devnet up' there, and 'aitbc devnet down' after them (a devnet already running in --home is used "
        .. "and left running). With --url (or AITBC_URL) it uses that node instead: the config is pointed at it and "
        .. "keys are made with its admin key (AITBC_SCENARIO_ADMIN_KEY).",
      args = { { "paths", variadic = true, optional = true, help = "scenario files or directories" } },
      options = {
        { "--tap", type = "boolean", help = "print TAP instead of the human report" },
        { "--junit", metavar = "FILE", help = "also write a JUnit XML report to FILE" },
        { "--home", metavar = "DIR", help = "HOME for the commands, shared by every file (default: a fresh temporary "
          .. "one per file)" },
        { "--keep", type = "boolean", help = "keep the temporary HOME directories" },
      },
      examples = { "aitbc scenario run scenarios/", "aitbc scenario run --tap scenarios/01_client_jobs.lua",
                   "aitbc scenario run --junit report.xml" },
      run = run,
    },
  },
}
