//! Durations as Kubernetes writes them: the human ones of `kubectl get` (AGE, DURATION), upstream's
//! `duration.HumanDuration`, and Go's (`1m30s`) that flags and configuration files take.

use std::time::Duration;

/// `5s`, `3m20s`, `5h6m`, `3d4h`, `2y34d`: two units while short, one once long.
pub fn human(d: Duration) -> String {
    let seconds = d.as_secs() as i64;
    if seconds < 0 {
        return "<invalid>".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// A Go duration (`15s`, `1m30s`, `500ms`), as `time.ParseDuration` reads it.
pub fn parse_go(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_kubectl() {
        let s = Duration::from_secs;
        assert_eq!(human(s(5)), "5s");
        assert_eq!(human(s(119)), "119s");
        assert_eq!(human(s(200)), "3m20s");
        assert_eq!(human(s(600)), "10m");
        assert_eq!(human(s(3 * 3600 + 60 * 6)), "3h6m");
        assert_eq!(human(s(30 * 3600)), "30h");
        assert_eq!(human(s(3 * 86400 + 4 * 3600)), "3d4h");
        assert_eq!(human(s(100 * 86400)), "100d");
        assert_eq!(human(s(800 * 86400)), "2y70d");
    }
}
