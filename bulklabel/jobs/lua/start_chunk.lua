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
-- A job that has ended (failed or cancelled) takes no new deliveries: its state is returned
-- and nothing changes. Otherwise: counts the delivery, moves a queued job to running, sets
-- started_at once, records the worker and the time of this progress; the keys it creates
-- expire with the job hash.
-- Returns {deliveries of this chunk so far, 1 if the chunk is already counted else 0, state},
-- or {-1, 0, ''} if the job does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, ''} end
local state = redis.call('HGET', KEYS[1], 'state')
local seen = redis.call('SISMEMBER', KEYS[3], ARGV[1])
if state == 'failed' or state == 'cancelled' then return {0, seen, state} end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
if state == 'queued' then
  state = 'running'
  redis.call('HSET', KEYS[1], 'state', state)
end
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[3])
redis.call('HSET', KEYS[1], 'progress_at', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[2])
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
end
return {n, seen, state}
