//! The report of `svcnet-bench endpoints`: the figures each phase gathers and the markdown table they print as.

use std::collections::HashMap;
use std::time::Duration;

use super::{EndpointsArgs, NODE, TARGET_P99_MS};
use crate::session::{Mem, ms, row, table_header};

/// What has been measured so far; filled phase by phase so a timeout still reports what it got.
#[derive(Default)]
pub(super) struct Report {
    pub(super) setup: Option<SetupFigures>,
    pub(super) converge: Option<Converge>,
    pub(super) flips: Option<FlipFigures>,
    /// EndpointSlice controller metrics at the end, with their change during the flip phase.
    pub(super) metrics: Vec<(String, f64, Option<f64>)>,
    pub(super) mem_end: Option<Mem>,
}

pub(super) struct SetupFigures {
    pub(super) services_ok: usize,
    pub(super) pods_ok: usize,
    pub(super) create_failed: usize,
    pub(super) create_wall: Duration,
    pub(super) status_ok: usize,
    pub(super) status_failed: usize,
    pub(super) status_wall: Duration,
    pub(super) first_failure: Option<String>,
}

pub(super) struct Converge {
    /// From the first initial status write to every Service having P ready endpoints.
    pub(super) since_first_status: Duration,
    /// From the last initial status write being answered to the same point.
    pub(super) since_last_status: Duration,
    pub(super) slices: usize,
}

pub(super) struct FlipFigures {
    pub(super) flips: usize,
    pub(super) observed: usize,
    pub(super) p50: Duration,
    pub(super) p99: Duration,
    pub(super) max: Duration,
    pub(super) write_p50: Duration,
    pub(super) write_p99: Duration,
    pub(super) slice_events: usize,
    pub(super) server_cpu: f64,
    pub(super) bench_cpu: f64,
    pub(super) wall: Duration,
}

pub(super) fn print_table(args: &EndpointsArgs, r: &Report) {
    let na = || "not measured".to_string();
    let (s, p) = (args.services, args.pods_per_service);
    println!();
    println!(
        "Command: `svcnet-bench endpoints --services {s} --pods-per-service {p} --flips {} --flip-interval-ms {} \
         --concurrency {} --connections {} --seed {} --proxy-mode {}`",
        args.flips, args.flip_interval_ms, args.concurrency, args.connections, args.seed, args.proxy_mode
    );
    println!();
    table_header();
    match &r.setup {
        Some(st) => {
            row(
                &format!(
                    "create {s} Services + {} Pods (bound to {NODE}), {} in flight",
                    s * p,
                    args.concurrency
                ),
                &format!(
                    "{} + {} created, {} failed, {:.2} s",
                    st.services_ok,
                    st.pods_ok,
                    st.create_failed,
                    st.create_wall.as_secs_f64()
                ),
                "",
            );
            row(
                &format!("initial pods/status writes (Running, podIP, Ready) × {}", s * p),
                &format!(
                    "{} ok, {} failed, {:.2} s",
                    st.status_ok,
                    st.status_failed,
                    st.status_wall.as_secs_f64()
                ),
                "",
            );
            if let Some(f) = &st.first_failure {
                row("first setup failure", &f.replace('|', "/"), "");
            }
        }
        None => row("setup", &na(), ""),
    }
    match &r.converge {
        Some(cv) => row(
            &format!("initial convergence: every Service has {p} ready endpoints"),
            &format!(
                "{:.2} s after the first status write ({:.2} s after the last; {} slices)",
                cv.since_first_status.as_secs_f64(),
                cv.since_last_status.as_secs_f64(),
                cv.slices
            ),
            "",
        ),
        None => row("initial convergence", &na(), ""),
    }
    let target = format!("p99 ≤ {TARGET_P99_MS:.0} ms");
    match &r.flips {
        Some(f) => {
            row(
                "readiness flip → EndpointSlice watch event, p50 / p99 / max",
                &format!(
                    "{} / {} / {} (p99 = {:.2}× the target)",
                    ms(f.p50),
                    ms(f.p99),
                    ms(f.max),
                    f.p99.as_secs_f64() * 1000.0 / TARGET_P99_MS
                ),
                &target,
            );
            row(
                "flips observed",
                &format!(
                    "{} of {} ({} ms apart; {} slice events)",
                    f.observed, f.flips, args.flip_interval_ms, f.slice_events
                ),
                "",
            );
            row(
                "pods/status write latency p50 / p99 (during flips)",
                &format!("{} / {}", ms(f.write_p50), ms(f.write_p99)),
                "",
            );
            row(
                "server CPU during flips (API server + controllers, one process)",
                &format!(
                    "{:.2} s over {:.2} s ({:.1} ms per flip; bench client {:.2} s)",
                    f.server_cpu,
                    f.wall.as_secs_f64(),
                    f.server_cpu * 1000.0 / f.flips.max(1) as f64,
                    f.bench_cpu
                ),
                "",
            );
        }
        None => row("readiness flip → EndpointSlice watch event", &na(), &target),
    }
    row(
        "server memory at end",
        &r.mem_end.map_or_else(na, |m| m.show()),
        "",
    );
    for (k, v) in metric_rows(&r.metrics) {
        row(&format!("`{k}`"), &v, "");
    }
}

/// Metric series as (name, shown value): counters with their flip-phase increase, and each histogram's
/// `_count`/`_sum` pair folded into a count and a mean (in ms for `_seconds`), overall and in the flip
/// phase.
pub(super) fn metric_rows(metrics: &[(String, f64, Option<f64>)]) -> Vec<(String, String)> {
    let by_name: HashMap<&str, (f64, Option<f64>)> =
        metrics.iter().map(|(k, v, d)| (k.as_str(), (*v, *d))).collect();
    let mut out = Vec::new();
    for (k, v, d) in metrics {
        if k.ends_with("_sum") {
            continue;
        }
        if let Some(base) = k.strip_suffix("_count")
            && let Some(&(sum, dsum)) = by_name.get(format!("{base}_sum").as_str())
        {
            let (scale, unit) = if base.ends_with("_seconds") {
                (1000.0, " ms")
            } else {
                (1.0, "")
            };
            let mean = |s: f64, c: f64| if c > 0.0 { s / c * scale } else { 0.0 };
            let mut shown = format!("count {v}, mean {:.2}{unit}", mean(sum, *v));
            if let (Some(dc), Some(ds)) = (d, dsum) {
                shown.push_str(&format!(
                    " (flip phase: count +{dc}, mean {:.2}{unit})",
                    mean(ds, *dc)
                ));
            }
            out.push((base.to_string(), shown));
            continue;
        }
        let shown = match d {
            Some(d) => format!("{v} (flip phase: +{d})"),
            None => format!("{v}"),
        };
        out.push((k.clone(), shown));
    }
    out
}
