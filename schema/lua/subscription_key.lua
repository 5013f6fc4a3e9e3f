-- subscription_key: replace the digest of the primary or secondary key; the
-- old key stops working at once. An empty digest revokes the secondary key.
-- ARGV: 1-5 apimon_mgmt_args, 6 slot (primary|secondary), 7 new digest,
-- 8 If-Match, 9-11 the Idempotency-Key's digest, the request's fingerprint
-- and the sealed key (lib.lua idem_replay; all optional).
return apimon_run(function()
apimon_schema_check()
local sk = KEYS[1]
local m, slot, digest, cond, idem, fp, sealed = apimon_mgmt_args()
local replay = idem_replay(idem, fp)
if replay then return replay end
local now = m.now
digest = digest or ''
local h = sub_load(sk, m.kind, m.owner, m.now)
local field = ({ primary = 'kp', secondary = 'ks' })[slot]
if not field then apimon_err('bad_request', 'slot must be primary or secondary') end
if not valid_digest(digest) and not (digest == '' and slot == 'secondary') then
  apimon_err('bad_request', 'digest: not 64 hex digits')
end
if h.state == 'cancelled' or h.state == 'expired' then
  apimon_err('conflict', 'subscription is ' .. h.state)
end
apimon_if_match(h, cond, 'subscription')
redis.call('HSET', sk, field, digest, 'lastModifiedAt', fmt(now))
redis.call('HINCRBY', sk, 'ver', 1)
local after = sub_public(hash_table(redis.call('HGETALL', sk)))
apimon_audit(m.who, m.addr, now, 'subscription.key.' .. slot, h.id, sub_public(h), after)
idem_store(idem, fp, after, sealed)
return cjson.encode(after)
end)
