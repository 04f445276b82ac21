local M = {}
function M.sweep() return 0 end
return M
