-- Record that a worker started (was delivered) a chunk.
--
-- KEYS[1]  job hash                 bulklabel:job:<id>
-- KEYS[2]  deliveries hash          bulklabel:job:<id>:deliveries
-- KEYS[3]  chunks_done set          bulklabel:job:<id>:chunks_done
-- KEYS[4]  workers set              bulklabel:job:<id>:workers
-- ARGV[1]  chunk number
-- ARGV[2]  worker name
-- ARGV[3]  now (Unix time)
--
-- Moves a queued job to running, sets started_at once, records the worker.
-- Returns {deliveries of this chunk so far, 1 if the chunk is already counted else 0},
-- or {-1, 0} if the job does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local seen = redis.call('SISMEMBER', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running')
end
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[2])
return {n, seen}
