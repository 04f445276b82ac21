--- busted output handler: the terminal handler, then the closing line
-- "N passed, N failed[, N skipped]" that CI reads.
return function(options)
  local busted = require "busted"
  local term = require "term"
  local tty = io.type(io.stdout) == "file" and term.isatty(io.stdout)
  local handler = require("busted.outputHandlers." .. (tty and "utfTerminal" or "plainTerminal"))(options)
  local subscribe = handler.subscribe
  handler.subscribe = function(h, opts)
    subscribe(h, opts)
    busted.subscribe({ "suite", "end" }, function(_, count, total)
      if count == total then
        local failed = h.failuresCount + h.errorsCount
        local line = string.format("%d passed, %d failed", h.successesCount, failed)
        if h.pendingsCount > 0 then line = line .. string.format(", %d skipped", h.pendingsCount) end
        io.write(line, "\n")
        io.flush()
      end
      return nil, true
    end)
  end
  return handler
end
