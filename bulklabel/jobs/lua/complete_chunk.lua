-- Count a finished chunk once, and complete the job if that was the last one.
-- Needs complete_if_ready.lua prepended.
--
-- KEYS[1]  job hash                 bulklabel:job:<id>
-- KEYS[2]  chunks_done set          bulklabel:job:<id>:chunks_done
-- KEYS[3]  models set               bulklabel:job:<id>:models
-- ARGV[1]  chunk number
-- ARGV[2]  images labeled in the chunk
-- ARGV[3]  images that failed in the chunk
-- ARGV[4]  model id
-- ARGV[5]  now (Unix time)
--
-- Returns {counted, completed}: {-1, 0} if the job does not exist, {0, 0} if the chunk
-- was already counted, {1, 1} if this completed the job, else {1, 0}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return {0, 0} end
redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'errors', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
redis.call('HSET', KEYS[1], 'progress_at', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[4])
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
return {1, complete_if_ready(KEYS[1], ARGV[5])}
