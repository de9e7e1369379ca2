//! Go's and kube's duration texts: `duration.HumanDuration` for ages, and reading timestamps.

use super::*;

// ---------------------------------------------------------------------------------------------------
// Durations and timestamps.
// ---------------------------------------------------------------------------------------------------

/// kube's `duration.HumanDuration`: a short text with about two significant units ("5s", "3m2s", "2d3h",
/// "4y12d"). Up to 2 s in the past counts as "0s" (tolerated clock skew); further in the past gives
/// `"<invalid>"`. Durations beyond Go's `time.Duration` range saturate to it, as Go's `time.Since` does.
pub fn human_duration(d: SignedDuration) -> String {
    // Go computes in int64 nanoseconds; saturate the same way.
    let nanos = d.as_nanos().clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    pub(super) const SECOND: i64 = 1_000_000_000;
    pub(super) const MINUTE: i64 = 60 * SECOND;
    pub(super) const HOUR: i64 = 60 * MINUTE;
    // `int(d.Seconds())` truncates toward zero, as integer division does.
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{}h", hours / 24, h)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{}d", hours / 24 / 365, dy)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// kube's `translateTimestampSince`: the age of `timestamp` at `now`, or `"<unknown>"` for an unset
/// (zero) timestamp.
pub fn translate_timestamp_since(timestamp: Option<Timestamp>, now: Timestamp) -> String {
    match timestamp {
        None => "<unknown>".to_string(),
        Some(t) => human_duration(now.duration_since(t)),
    }
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z), which `metav1.Time` treats as unset.
pub(super) const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Parses a `metav1.Time`/`MicroTime` field; `None` when unset, zero or unparsable (all of which kube
/// prints as an unset time).
pub(super) fn time_at(v: &Value, path: &[&str]) -> Option<Timestamp> {
    let t: Timestamp = str_at(v, path).parse().ok()?;
    if t.as_second() == GO_ZERO_TIME_SECONDS && t.subsec_nanosecond() == 0 {
        return None;
    }
    Some(t)
}

pub(super) fn age(obj: &Value, now: Timestamp) -> Value {
    Value::String(translate_timestamp_since(
        time_at(obj, &["metadata", "creationTimestamp"]),
        now,
    ))
}
