//! Taking over tables that a previous process left (after a restart or a crash): the tables as `nft list
//! table` prints them are compared with the rendering of the wanted state, and one transaction changes
//! only what differs. The tables are never deleted, so rules and sets are in place at every moment and
//! connections keep their conntrack entries and DNAT (kube-proxy's restart is as quiet).
//!
//! Rules are compared as text: the renderer writes every rule the way nft prints it. What cannot be
//! reconciled in place (a set whose declaration changed, a base chain on another hook) makes the caller
//! replace the tables instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use svcnet_dataplane::ServicePortName;

use crate::render::{Family, PORTS_PER_MAP, service_chain};
use crate::{NftConfig, NftError, nft, render};

/// One set or map: its declaration (one line per statement, without `;`), its elements as nft writes
/// them, and whether it is dynamic (its elements are runtime state: affinity entries).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SetObj {
    map: bool,
    decl: Vec<String>,
    elements: BTreeSet<String>,
    dynamic: bool,
}

/// One family's table, as text objects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    sets: BTreeMap<String, SetObj>,
    /// Chain → its lines (a base chain's `type …` line first), in order.
    chains: BTreeMap<String, Vec<String>>,
}

/// `nft list table` of the configured table in each family (the listings, concatenated; empty when
/// there is none) and the families where the `standby` table (left by an interrupted full sync) exists.
/// All at once (an `nft` process each): listing is most of a takeover's time. Not `nft list tables`,
/// for which nft 1.0.6 reads every set's elements (seconds at 10,000 Services).
pub(crate) fn list(cfg: &NftConfig, standby: &str) -> Result<(String, Vec<Family>), NftError> {
    let lists: Vec<(Family, &str, Result<String, NftError>)> = std::thread::scope(|s| {
        let jobs: Vec<_> = render::families(cfg)
            .into_iter()
            .flat_map(|fam| [(fam, cfg.table.as_str()), (fam, standby)])
            .map(|(fam, table)| {
                let cmd = &cfg.nft_command;
                let job = s.spawn(move || nft::run(cmd, &["list", "table", fam.nft(), table], None));
                (fam, table, job)
            })
            .collect();
        jobs.into_iter()
            .map(|(fam, table, job)| {
                let res = job.join().unwrap_or_else(|_| {
                    Err(NftError::Failed {
                        command: "nft list table".into(),
                        status: None,
                        stderr: "the listing thread panicked".into(),
                    })
                });
                (fam, table, res)
            })
            .collect()
    });
    let mut text = String::new();
    let mut standby_left = Vec::new();
    for (fam, table, res) in lists {
        match res {
            Ok(out) if table == cfg.table => text.push_str(&out),
            Ok(_) => standby_left.push(fam),
            // nft says "No such file or directory" for a table that does not exist.
            Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file") => {}
            Err(e) => return Err(e),
        }
    }
    Ok((text, standby_left))
}

/// The declaration line as both nft and the renderer may write it: no `;`, no kernel-chosen `size`,
/// timeouts in seconds.
fn norm_decl(line: &str) -> Option<String> {
    let line = line.trim().trim_end_matches(';').trim();
    if line.is_empty() || line.starts_with("size ") {
        return None;
    }
    if let Some(t) = line.strip_prefix("timeout ") {
        return Some(format!("timeout {}s", seconds(t)?));
    }
    Some(line.to_string())
}

/// nft's duration text (`10m`, `1h30m`, `600s`) in seconds.
fn seconds(t: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            'd' => 86400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    if !num.is_empty() {
        total += num.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The tables named `table` in `text` (`nft list table` output, or a rendering), by family (`ip`,
/// `ip6`).
pub(crate) fn parse(text: &str, table: &str) -> BTreeMap<String, Table> {
    let mut out: BTreeMap<String, Table> = BTreeMap::new();
    let mut fam: Option<String> = None;
    // (kind, name, lines) of the object being read.
    let mut cur: Option<(String, String, Vec<String>)> = None;
    let mut in_elements = false;
    let mut elements = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if cur.is_none() {
            if let Some(rest) = line.strip_prefix("table ")
                && let Some(head) = rest.strip_suffix('{')
            {
                let mut parts = head.split_whitespace();
                let (f, t) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                fam = (t == table).then(|| f.to_string());
                if let Some(f) = &fam {
                    out.entry(f.clone()).or_default();
                }
                continue;
            }
            if fam.is_none() {
                continue;
            }
            for kind in ["chain ", "set ", "map "] {
                if let Some(rest) = line.strip_prefix(kind)
                    && let Some(name) = rest.strip_suffix('{')
                {
                    cur = Some((kind.trim().to_string(), name.trim().to_string(), Vec::new()));
                }
            }
            if line == "}" {
                fam = None;
            }
            continue;
        }
        let (kind, name, lines) = cur.as_mut().expect("inside an object");
        if in_elements {
            elements.push(' ');
            elements.push_str(line);
            if line.ends_with('}') {
                in_elements = false;
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("elements = ") {
            elements = rest.to_string();
            in_elements = !line.ends_with('}');
            continue;
        }
        if line != "}" {
            if !line.is_empty() {
                lines.push(line.to_string());
            }
            continue;
        }
        let Some(f) = &fam else { continue };
        let t = out.entry(f.clone()).or_default();
        if kind == "chain" {
            t.chains.insert(name.clone(), std::mem::take(lines));
        } else {
            let els = elements.trim().trim_start_matches('{').trim_end_matches('}');
            let decl: Vec<String> = lines
                .iter()
                .flat_map(|l| l.split("; "))
                .filter_map(norm_decl)
                .collect();
            let dynamic = decl
                .iter()
                .any(|d| d.starts_with("flags") && d.contains("dynamic"));
            t.sets.insert(
                name.clone(),
                SetObj {
                    map: kind == "map",
                    decl,
                    elements: els
                        .split(',')
                        // Lines were trimmed and joined with one space, as nft writes an element.
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect(),
                    dynamic,
                },
            );
        }
        elements.clear();
        cur = None;
    }
    out
}

/// The ids the endpoint maps of `found` give the ports of `names` (from the rule that DNATs through
/// `… numgen random mod 65536 offset N map @endpoints-PROTO-G` in each port's service chain). Ports
/// with ClientIP affinity have no such rule and get none.
pub(crate) fn ids<'a>(
    found: &BTreeMap<String, Table>,
    names: impl Iterator<Item = &'a ServicePortName>,
) -> HashMap<ServicePortName, u32> {
    let mut out = HashMap::new();
    for name in names {
        let chain = service_chain(name);
        let id = found
            .values()
            .filter_map(|t| t.chains.get(&chain))
            .flatten()
            .find_map(|rule| id_of_rule(rule));
        if let Some(id) = id {
            out.insert(name.clone(), id);
        }
    }
    out
}

fn id_of_rule(rule: &str) -> Option<u32> {
    let (_, map) = rule.split_once(" map @endpoints-")?;
    let group: u32 = map.rsplit('-').next()?.parse().ok()?;
    let offset: u32 = match rule.split_once(" offset ") {
        Some((_, rest)) => rest.split_whitespace().next()?.parse().ok()?,
        None => 0,
    };
    Some(group * PORTS_PER_MAP + offset / crate::slots::SLOTS)
}

/// Why the tables cannot be reconciled in place.
#[derive(Debug, thiserror::Error)]
#[error("cannot take over table {family} {table}: {reason}")]
pub(crate) struct CannotReconcile {
    family: String,
    table: String,
    reason: String,
}

/// What [`reconcile`] changes, counted (a takeover of an unchanged state changes nothing).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TakeoverStats {
    /// Sets and maps created or deleted.
    pub sets: usize,
    /// Chains created, rewritten or deleted.
    pub chains: usize,
    /// Elements added or deleted.
    pub elements: usize,
}

/// The element's key (what a deletion names): everything before ` : ` in a map.
fn key_of(e: &str) -> &str {
    e.split_once(" : ").map_or(e, |(k, _)| k)
}

/// One transaction that takes the tables `found` to `wanted` (empty when they are equal). A set whose
/// declaration changed (an affinity timeout) is recreated, with every chain whose rules name it.
pub(crate) fn reconcile(
    found: &BTreeMap<String, Table>,
    wanted: &BTreeMap<String, Table>,
    table: &str,
) -> Result<(String, TakeoverStats), CannotReconcile> {
    let mut stats = TakeoverStats::default();
    // The transaction's steps, in order.
    let mut tables = String::new();
    let mut flushes = String::new();
    let mut set_deletes = String::new();
    let mut set_adds = String::new();
    let mut chain_adds = String::new();
    let mut bodies = String::new();
    let mut elem_deletes = String::new();
    let mut elem_adds = String::new();
    let mut late = String::new();
    for (fam, want) in wanted {
        let t = format!("{fam} {table}");
        let fail = |reason: String| CannotReconcile {
            family: fam.clone(),
            table: table.to_string(),
            reason,
        };
        let empty = Table::default();
        let have = found.get(fam).unwrap_or(&empty);
        if !found.contains_key(fam) {
            let _ = writeln!(tables, "add table {t}");
        }
        let mut recreated = BTreeSet::new();
        for (name, w) in &want.sets {
            let kind = if w.map { "map" } else { "set" };
            let none = SetObj::default();
            let h = match have.sets.get(name) {
                Some(h) if h.map == w.map && h.decl == w.decl => h,
                Some(h) => {
                    stats.sets += 1;
                    let old = if h.map { "map" } else { "set" };
                    let _ = writeln!(set_deletes, "delete {old} {t} {name}");
                    let _ = writeln!(set_adds, "add {kind} {t} {name} {{ {}; }}", w.decl.join("; "));
                    recreated.insert(format!("@{name}"));
                    &none
                }
                None => {
                    stats.sets += 1;
                    let _ = writeln!(set_adds, "add {kind} {t} {name} {{ {}; }}", w.decl.join("; "));
                    &none
                }
            };
            if w.dynamic {
                // Affinity entries are the clients' state: kept as they are.
                continue;
            }
            let gone: Vec<&str> = h.elements.difference(&w.elements).map(|e| key_of(e)).collect();
            let new: Vec<&String> = w.elements.difference(&h.elements).collect();
            stats.elements += gone.len() + new.len();
            // Deletions first: a changed element keeps its key.
            for chunk in gone.chunks(1000) {
                let _ = writeln!(
                    elem_deletes,
                    "delete element {t} {name} {{ {} }}",
                    chunk.join(", ")
                );
            }
            for chunk in new.chunks(1000) {
                let v: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
                let _ = writeln!(elem_adds, "add element {t} {name} {{ {} }}", v.join(", "));
            }
        }
        let names_recreated = |rules: &[String]| {
            rules.iter().any(|r| {
                r.split_whitespace()
                    .any(|w| recreated.contains(w.trim_end_matches(['}', ','])))
            })
        };
        for (name, rules) in &want.chains {
            let base = rules.first().filter(|r| r.starts_with("type "));
            match have.chains.get(name) {
                Some(h) if h == rules && !names_recreated(h) => continue,
                Some(h) => {
                    if h.first().filter(|r| r.starts_with("type ")) != base {
                        return Err(fail(format!("base chain {name} differs")));
                    }
                    let _ = writeln!(flushes, "flush chain {t} {name}");
                }
                None => match base {
                    Some(b) => {
                        let _ = writeln!(chain_adds, "add chain {t} {name} {{ {b} }}");
                    }
                    None => {
                        let _ = writeln!(chain_adds, "add chain {t} {name}");
                    }
                },
            }
            stats.chains += 1;
            let body: Vec<&str> = rules
                .iter()
                .filter(|r| !r.starts_with("type "))
                .map(String::as_str)
                .collect();
            if !body.is_empty() {
                let _ = writeln!(bodies, "add chain {t} {name} {{ {}; }}", body.join("; "));
            }
        }
        // What the wanted state does not have: chains emptied first (their rules may name each other and
        // the sets), then the sets (a verdict map's elements hold on to the chains they name), then the
        // chains.
        let mut late_chains = String::new();
        for name in have.chains.keys().filter(|n| !want.chains.contains_key(*n)) {
            stats.chains += 1;
            let _ = writeln!(flushes, "flush chain {t} {name}");
            let _ = writeln!(late_chains, "delete chain {t} {name}");
        }
        for (name, h) in have.sets.iter().filter(|(n, _)| !want.sets.contains_key(*n)) {
            stats.sets += 1;
            let _ = writeln!(late, "delete {} {t} {name}", if h.map { "map" } else { "set" });
        }
        late.push_str(&late_chains);
    }
    let script = [
        tables,
        flushes,
        set_deletes,
        set_adds,
        chain_adds,
        bodies,
        elem_deletes,
        elem_adds,
        late,
    ]
    .concat();
    Ok((script, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_durations() {
        assert_eq!(seconds("10m"), Some(600));
        assert_eq!(seconds("1h30m5s"), Some(5405));
        assert_eq!(seconds("600s"), Some(600));
        assert_eq!(seconds("3"), Some(3));
        assert_eq!(seconds("1x"), None);
    }

    #[test]
    fn ids_from_rules() {
        assert_eq!(
            id_of_rule(
                "meta l4proto tcp dnat ip to meta l4proto . numgen random mod 65536 map @endpoints-tcp-0"
            ),
            Some(0)
        );
        assert_eq!(
            id_of_rule(
                "meta l4proto tcp dnat ip to meta l4proto . numgen random mod 65536 offset 131072 map @endpoints-udp-3"
            ),
            Some(3 * PORTS_PER_MAP + 2)
        );
        assert_eq!(id_of_rule("jump mark-for-masquerade"), None);
    }
}
