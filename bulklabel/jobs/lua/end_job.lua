-- End a job that has not ended yet: mark it failed or cancelled, with a reason.
--
-- KEYS[1]  job hash                 bulklabel:job:<id>
-- ARGV[1]  new state                'failed' or 'cancelled'
-- ARGV[2]  reason (shown by status as the job's error)
-- ARGV[3]  now (Unix time)
--
-- Returns the state the job had before: '' if the job does not exist; if it had already
-- ended (done, failed or cancelled) nothing changes, so the first ending wins.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'done' or state == 'failed' or state == 'cancelled' then return state end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'error', ARGV[2], 'finished_at', ARGV[3])
return state
