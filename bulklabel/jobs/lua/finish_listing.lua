-- Mark the listing finished, fixing chunks_total to the chunks enqueued, and complete
-- the job if every chunk is already counted. Needs complete_if_ready.lua prepended.
--
-- KEYS[1]  job hash                 bulklabel:job:<id>
-- ARGV[1]  now (Unix time)
--
-- Returns 1 if this completed the job, else 0.
local enqueued = redis.call('HGET', KEYS[1], 'chunks_enqueued') or '0'
redis.call('HSET', KEYS[1], 'listing', '0', 'chunks_total', enqueued)
return complete_if_ready(KEYS[1], ARGV[1])
