-- Shared helper, prepended to the scripts that can end a job (not run on its own).
-- KEYS, ARGV: none of its own; the caller passes the job hash key and the time.
--
-- complete_if_ready(job, now): mark the job hash `job` done, and return 1, when the
-- listing is finished (listing == '0'), every chunk is counted
-- (chunks_total == chunks_done) and the job has not ended yet (not done, failed or
-- cancelled); set finished_at (and started_at, if no chunk ever started) to `now`.
-- Otherwise return 0.
local function complete_if_ready(job, now)
  local h = redis.call('HMGET', job, 'listing', 'chunks_total', 'chunks_done', 'state')
  local ended = h[4] == 'done' or h[4] == 'failed' or h[4] == 'cancelled'
  if h[1] == '0' and tonumber(h[2]) == tonumber(h[3]) and not ended then
    redis.call('HSET', job, 'state', 'done', 'finished_at', now)
    if redis.call('HEXISTS', job, 'started_at') == 0 then redis.call('HSET', job, 'started_at', now) end
    return 1
  end
  return 0
end
