-- Count a chunk the producer is about to enqueue.
--
-- KEYS[1]  job hash                 bulklabel:job:<id>
-- ARGV[1]  images in the chunk
-- ARGV[2]  now (Unix time)
--
-- Returns the job's state after the update: the producer stops listing a job that was
-- cancelled or failed meanwhile (nothing is counted then), and '' if the job is gone.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'failed' or state == 'cancelled' then return state end
redis.call('HINCRBY', KEYS[1], 'total', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'chunks_enqueued', 1)
redis.call('HSET', KEYS[1], 'progress_at', ARGV[2])
return state
