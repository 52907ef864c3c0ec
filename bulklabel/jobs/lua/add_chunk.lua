-- Count chunk number ARGV[1] that the producer is about to enqueue (chunks are numbered
-- 0, 1, 2... by the one producer of the job).
--
-- KEYS[1]  job hash                 bulklabel:job:<id>
-- ARGV[1]  chunk number
-- ARGV[2]  images in the chunk
-- ARGV[3]  now (Unix time)
--
-- Idempotent: a chunk number already counted adds nothing, so a call retried after a lost
-- reply (Redis restarting) cannot count a chunk twice.
-- Returns the job's state: the producer stops listing a job that was cancelled or failed
-- meanwhile (nothing is counted then), and '' if the job is gone.
local h = redis.call('HMGET', KEYS[1], 'state', 'chunks_enqueued')
local state = h[1]
if not state then return '' end
if state == 'failed' or state == 'cancelled' then return state end
if tonumber(h[2] or '0') > tonumber(ARGV[1]) then return state end
redis.call('HINCRBY', KEYS[1], 'total', ARGV[2])
redis.call('HSET', KEYS[1], 'chunks_enqueued', tonumber(ARGV[1]) + 1, 'progress_at', ARGV[3])
return state
