--- aitbc test: the busted specs, run inside this binary so the native
-- modules are tested in their real host.
return {
  name = "test",
  category = "Tools",
  summary = "Run the test suite (busted) inside the binary",
  description = "Options are busted's own (see 'aitbc test --help-busted'); by default the specs "
    .. "under tests/ run, as configured in .busted.",
  passthrough = true,
  args = { { "busted_args", variadic = true, optional = true, help = "options and paths for busted" } },
  examples = { "aitbc test", "aitbc test tests/crypto_spec.lua", "aitbc test --filter json" },
  run = function(ctx)
    local args = {}
    for _, a in ipairs(ctx.args.busted_args) do args[#args + 1] = a == "--help-busted" and "--help" or a end
    _G.arg = { [0] = "aitbc test", table.unpack(args) }
    local ok, runner = pcall(require, "busted.runner")
    if not ok then
      require("aitbc.errors").raise("failure", "busted is not installed",
        "install it with 'make deps' (Debian package lua-busted)")
    end
    runner { standalone = false, output = "aitbc.testing.output" }
  end,
}
