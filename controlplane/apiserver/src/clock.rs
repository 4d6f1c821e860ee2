//! Timestamps as the API writes them.

use std::time::{Duration, SystemTime};

/// `metav1.Time`: RFC 3339 in UTC with whole seconds.
pub fn now() -> String {
    format_time(SystemTime::now())
}

pub fn format_time(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metav1.MicroTime`: microseconds, as leases and events.k8s.io carry.
pub fn now_micro() -> String {
    let ts = jiff::Timestamp::now();
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn parse(text: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// How long ago `text` was (zero for the future or an unreadable time).
pub fn age(text: &str) -> Duration {
    parse(text)
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

pub fn in_seconds(secs: i64) -> String {
    let t = if secs >= 0 {
        SystemTime::now() + Duration::from_secs(secs as u64)
    } else {
        SystemTime::now() - Duration::from_secs(secs.unsigned_abs())
    };
    format_time(t)
}
