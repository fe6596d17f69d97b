-- wrk script shared by the bench/ scripts: GET each path of a file (one per line) in turn,
-- starting at a random one, so every connection walks the whole set.
--   wrk … -s bench/rotate.lua URL -- PATHS_FILE
local paths, i = {}, 0

function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  assert(#paths > 0, "no paths in " .. tostring(args[1]))
  i = math.random(#paths)
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
