-- subscription_key: replace the digest of the primary or secondary key; the
-- old key stops working at once. An empty digest revokes the secondary key.
return apimon_run(function()
apimon_schema_check()
local sk, slot, digest = KEYS[1], ARGV[1], ARGV[2] or ''
local now = apimon_now(ARGV[3])
local h = sub_load(sk, ARGV[4], ARGV[5])
local field = ({ primary = 'kp', secondary = 'ks' })[slot]
if not field then apimon_err('bad_request', 'slot must be primary or secondary') end
if not valid_digest(digest) and not (digest == '' and slot == 'secondary') then
  apimon_err('bad_request', 'digest: not 64 hex digits')
end
if h.state == 'cancelled' or h.state == 'expired' then
  apimon_err('conflict', 'subscription is ' .. h.state)
end
redis.call('HSET', sk, field, digest, 'lastModifiedAt', fmt(now))
local after = sub_public(hash_table(redis.call('HGETALL', sk)))
apimon_audit(ARGV[6], ARGV[7], now, 'subscription.key.' .. slot, h.id, sub_public(h), after)
return cjson.encode(after)
end)
