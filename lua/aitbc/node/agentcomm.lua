local M = {}
function M.flush_outbox() return 0 end
return M
