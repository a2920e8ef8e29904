//! Rate limits per client IP (middleware) and per authenticated principal (called by the auth
//! extractors once they know who is asking), with `Retry-After` and `RateLimit-*` headers.
//! The token buckets are `governor`'s GCRA; idle keys are pruned periodically so the maps stay
//! bounded by the number of recently active clients.

use std::{hash::Hash, net::IpAddr, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter, clock::Clock, middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::client_ip::ClientIp;
use crate::{
    config::RateLimitConfig,
    error::{ApiError, ErrorCode, retry_after_secs},
};

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

type Limiter<K> = RateLimiter<
    K,
    DefaultKeyedStateStore<K>,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;

/// One keyed limiter with its quota.
#[derive(Debug)]
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Limiter<K>,
    burst: u32,
    replenish: Duration,
}

/// What a check tells the client, as headers.
#[derive(Clone, Copy, Debug)]
pub struct RateInfo {
    limit: u32,
    remaining: u32,
    reset: u64,
}

impl RateInfo {
    /// Add the `RateLimit-*` headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT.clone(), HeaderValue::from(self.limit));
        headers.insert(REMAINING.clone(), HeaderValue::from(self.remaining));
        headers.insert(RESET.clone(), HeaderValue::from(self.reset));
    }
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// A limiter allowing `per_second` sustained and `burst` at once per key.
    pub fn new(config: RateLimitConfig) -> Self {
        Self::with_quota(Quota::per_second(config.per_second).allow_burst(config.burst))
    }

    /// A limiter allowing `burst` at once and `burst` per minute sustained (for rare,
    /// expensive operations such as unlock attempts).
    pub fn new_per_minute(config: RateLimitConfig) -> Self {
        Self::with_quota(Quota::per_minute(config.burst))
    }

    /// A limiter allowing `count` at once and `count` per `period` sustained (e.g. five
    /// sign-in mails per address per hour).
    pub fn per_period(count: std::num::NonZeroU32, period: Duration) -> Self {
        let interval = (period / count.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .expect("the interval is positive")
            .allow_burst(count);
        Self::with_quota(quota)
    }

    fn with_quota(quota: Quota) -> Self {
        Self {
            burst: quota.burst_size().get(),
            replenish: quota.replenish_interval(),
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    /// Take one request from `key`'s bucket, or say how long to wait.
    pub fn check(&self, key: &K) -> Result<RateInfo, ApiError> {
        let limit = self.burst;
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let refill = self.replenish * limit.saturating_sub(remaining);
                Ok(RateInfo {
                    limit,
                    remaining,
                    reset: refill.as_secs() + u64::from(refill.subsec_nanos() > 0),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let info = RateInfo {
                    limit,
                    remaining: 0,
                    reset: retry_after_secs(wait),
                };
                let mut err = ApiError::new(ErrorCode::RateLimited).retry_after(wait);
                info.apply(err.headers_mut());
                Err(err)
            }
        }
    }

    /// Forget keys whose buckets are full again.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Number of keys tracked.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// The limits of one service.
#[derive(Debug)]
pub struct RateLimits {
    /// Per client network ([`RateLimits::client_key`]).
    pub ip: KeyedLimit<IpAddr>,
    /// Per authenticated principal (e.g. `user:ID`, `node:ID`).
    pub principal: KeyedLimit<String>,
    ipv6_prefix: u8,
}

impl RateLimits {
    /// Build from configuration: IPv6 clients share the limits of their network of
    /// `ipv6_prefix` bits.
    pub fn new(ip: RateLimitConfig, principal: RateLimitConfig, ipv6_prefix: u8) -> Arc<Self> {
        Arc::new(Self {
            ip: KeyedLimit::new(ip),
            principal: KeyedLimit::new(principal),
            ipv6_prefix,
        })
    }

    /// What every per-client limit keys on (this one and the services' own, such as sign-in
    /// mails and unlock attempts): an IPv4 address itself (also when written IPv4-mapped), an
    /// IPv6 address's network of the configured prefix.
    pub fn client_key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let keep = u32::from(self.ipv6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                    IpAddr::V6((u128::from(v6) & mask).into())
                }
            },
        }
    }

    /// Check a principal; auth extractors call this once they know who is asking.
    pub fn check_principal(&self, principal: &str) -> Result<RateInfo, ApiError> {
        self.principal.check(&principal.to_owned())
    }

    /// Prune idle keys every minute until `stop` is cancelled.
    pub fn spawn_janitor(self: &Arc<Self>, stop: CancellationToken) {
        let limits = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        limits.ip.prune();
                        limits.principal.prune();
                    }
                }
            }
        });
    }
}

/// Paths never rate limited: probes and scrapers must see an overloaded service as it is.
fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics" || path == "/version"
}

/// Middleware: limit by client IP (needs [`ClientIp`] from the client-ip middleware).
pub async fn limit_by_ip(
    State(limits): State<Arc<RateLimits>>,
    req: Request,
    next: Next,
) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>().copied() else {
        return ApiError::new(ErrorCode::Internal).into_response();
    };
    match limits.ip.check(&limits.client_key(ip)) {
        Ok(info) => {
            let mut response = next.run(req).await;
            info.apply(response.headers_mut());
            response
        }
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn config(per_second: u32, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            per_second: NonZeroU32::new(per_second).expect("nonzero"),
            burst: NonZeroU32::new(burst).expect("nonzero"),
        }
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limit = KeyedLimit::new(config(1, 3));
        for expected_remaining in [2, 1, 0] {
            let info = limit.check(&"a".to_owned()).expect("within burst");
            assert_eq!(info.remaining, expected_remaining);
        }
        let refused = limit.check(&"a".to_owned()).expect_err("over burst");
        assert_eq!(refused.code(), ErrorCode::RateLimited);
        let response = refused.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["ratelimit-remaining"], "0");
        // Keys are independent.
        limit.check(&"b".to_owned()).expect("other key unaffected");
    }

    #[test]
    fn principals_are_limited_independently_of_ips() {
        let limits = RateLimits::new(config(100, 100), config(1, 1), 64);
        limits.check_principal("node:1").expect("first");
        assert!(limits.check_principal("node:1").is_err());
        limits.check_principal("node:2").expect("another principal");
        assert_eq!(limits.principal.tracked(), 2);
    }
}
