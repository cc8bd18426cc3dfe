//! Document leases in Redis: at most one owner per document, with a fencing token.
//!
//! Acquire is `SET lease NX PX ttl` plus an `INCR` of the document's fence counter, done in one
//! Lua script so a token always belongs to exactly one acquisition. The counter is first raised
//! to the token stored with the snapshot (`floor`): a Redis that lost its data, or a document
//! last written by a single node, can never hand out a token the store would refuse.
//! Renew and release only act while the lease still names this node.

use redis::Script;
use redis::aio::ConnectionLike;

/// Returns the new fencing token, or 0 when another node holds the lease.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local floor = tonumber(ARGV[3])
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if current < floor then redis.call('SET', KEYS[2], floor) end
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return -1
end
return 0
";

/// 1 when the lease was extended, 0 when it is no longer ours.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Outcome of an acquisition attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Ours now, with this fencing token.
    New(u64),
    /// Already ours (e.g. after a Redis blip); the token we hold stays valid.
    AlreadyOurs,
    /// Another node owns it.
    Taken,
}

pub async fn acquire<C: ConnectionLike>(
    conn: &mut C,
    lease_key: &str,
    fence_key: &str,
    node_id: &str,
    ttl_ms: u64,
    floor: u64,
) -> redis::RedisResult<Acquired> {
    let result: i64 = Script::new(ACQUIRE)
        .key(lease_key)
        .key(fence_key)
        .arg(node_id)
        .arg(ttl_ms)
        .arg(floor)
        .invoke_async(conn)
        .await?;
    Ok(match result {
        -1 => Acquired::AlreadyOurs,
        0 => Acquired::Taken,
        token => Acquired::New(token as u64),
    })
}

pub async fn renew<C: ConnectionLike>(
    conn: &mut C,
    lease_key: &str,
    node_id: &str,
    ttl_ms: u64,
) -> redis::RedisResult<bool> {
    let renewed: i64 = Script::new(RENEW)
        .key(lease_key)
        .arg(node_id)
        .arg(ttl_ms)
        .invoke_async(conn)
        .await?;
    Ok(renewed == 1)
}

pub async fn release<C: ConnectionLike>(
    conn: &mut C,
    lease_key: &str,
    node_id: &str,
) -> redis::RedisResult<bool> {
    let released: i64 = Script::new(RELEASE)
        .key(lease_key)
        .arg(node_id)
        .invoke_async(conn)
        .await?;
    Ok(released == 1)
}
