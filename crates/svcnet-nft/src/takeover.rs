//! Taking over tables that a previous process left (after a restart or a crash): the tables are read
//! back and compared with the wanted state ([`render`]'s table spec), and only what differs is written.
//! The tables are never deleted, so rules and sets are in place at every moment and connections keep
//! their conntrack entries and DNAT (kube-proxy's restart is as quiet).
//!
//! Reading goes around `nft list table`, which at 10,000 Services costs a second of CPU (most of it
//! turning rules back into text):
//!
//! - set and map declarations come from `nft -t list sets; list maps` (terse: no elements, a few ms);
//! - elements from a netlink dump per set ([`netlink`]), compared as the bytes the kernel stores with
//!   the encoding the backend writes them in ([`crate::Elem::netlink`]);
//! - chains and rules from netlink dumps: a base chain's hook, and for every chain the number of rules
//!   and the comment of its last rule, which carries a digest of the chain's lines (the renderer signs
//!   every chain). A chain whose count or digest differs is rewritten; a port's place in the endpoint
//!   maps is read from its service chain's `numgen … offset` and map name.
//!
//! The differences are written as an incremental change is: an `nft -f` transaction creating sets and
//! writing chains, one netlink batch of elements, and an `nft -f` transaction deleting what is no longer
//! wanted. What cannot be reconciled in place (a base chain on another hook) makes the caller replace
//! the tables instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use svcnet_dataplane::ServicePortName;

use crate::netlink::{self, BaseHook};
use crate::render::{Family, PORTS_PER_MAP, SetSpec, TableSpec, comment_of_rule, service_chain};
use crate::{NftConfig, NftError, nft, render};

/// One set or map as `nft -t` prints it: its declaration (one line per statement, without `;`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SetObj {
    map: bool,
    decl: Vec<String>,
    /// Elements as nft writes them (only where the listing had them).
    elements: BTreeSet<String>,
}

/// A set's elements as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Elements {
    /// As the kernel stores them (a netlink dump), sorted.
    Bytes(Vec<netlink::Element>),
    /// As nft prints them (sets whose wanted elements exist only as text: the pod CIDRs).
    Text(BTreeSet<String>),
}

/// A chain as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    hook: Option<BaseHook>,
    /// How many rules it has.
    rules: usize,
    /// The comment of its last rule (where the renderer's digest is).
    last_comment: Option<String>,
    /// The sets its rules name.
    sets: BTreeSet<String>,
    /// The endpoint-map place its dispatch rule gives (service chains).
    id: Option<u32>,
}

/// One family's table as read back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    sets: BTreeMap<String, SetObj>,
    /// Elements of the sets that are also wanted (and not dynamic).
    elements: BTreeMap<String, Elements>,
    chains: BTreeMap<String, Chain>,
}

/// The configured table in each family where it exists, read back without elements (empty when there
/// is none; [`read_elements`] adds them), and the families where the `standby` table (left by an
/// interrupted full sync) exists.
pub(crate) fn read(
    cfg: &NftConfig,
    w: &mut netlink::Writer,
    standby: &str,
) -> Result<(BTreeMap<Family, Found>, Vec<Family>), NftError> {
    let mut out = BTreeMap::new();
    let mut standby_left = Vec::new();
    for fam in render::families(cfg) {
        let tables = w.tables(fam)?;
        if tables.iter().any(|t| t == standby) {
            standby_left.push(fam);
        }
        if tables.contains(&cfg.table) {
            out.insert(fam, Found::default());
        }
    }
    if out.is_empty() {
        return Ok((out, standby_left));
    }
    let text = nft::run(
        &cfg.nft_command,
        &["-t", "-f", "-"],
        Some("list sets\nlist maps\n"),
    )?;
    let mut decls = parse(&text, &cfg.table);
    for (fam, found) in out.iter_mut() {
        found.sets = decls.remove(fam.nft()).unwrap_or_default();
        for c in w.chains(*fam, &cfg.table)? {
            found.chains.insert(
                c.name,
                Chain {
                    hook: c.hook,
                    rules: 0,
                    last_comment: None,
                    sets: BTreeSet::new(),
                    id: None,
                },
            );
        }
        for r in w.rules(*fam, &cfg.table)? {
            let Some(c) = found.chains.get_mut(&r.chain) else {
                continue;
            };
            c.rules += 1;
            c.last_comment = r.comment;
            if c.id.is_none()
                && let Some(offset) = r.numgen_offset
            {
                c.id = r.lookups.iter().find_map(|s| id_of_map(s, offset));
            }
            c.sets.extend(r.lookups);
        }
    }
    Ok((out, standby_left))
}

/// Reads the elements of the sets of `found` that `wanted` has too (and whose elements are not runtime
/// state).
pub(crate) fn read_elements(
    cfg: &NftConfig,
    w: &mut netlink::Writer,
    found: &mut BTreeMap<Family, Found>,
    wanted: &BTreeMap<Family, TableSpec>,
) -> Result<(), NftError> {
    for (fam, found) in found.iter_mut() {
        let Some(spec) = wanted.get(fam) else { continue };
        for (name, set) in &spec.sets {
            if set.dynamic() || !found.sets.contains_key(name) {
                continue;
            }
            let els = if set.raw.is_empty() {
                let mut els = w.elements(*fam, &cfg.table, name)?;
                els.sort_unstable();
                Elements::Bytes(els)
            } else {
                let text = nft::run(
                    &cfg.nft_command,
                    &["list", "set", fam.nft(), &cfg.table, name],
                    None,
                )?;
                let mut listed = parse(&text, &cfg.table);
                let els = listed
                    .remove(fam.nft())
                    .and_then(|mut t| t.remove(name))
                    .map(|s| s.elements)
                    .unwrap_or_default();
                Elements::Text(els)
            };
            found.elements.insert(name.clone(), els);
        }
    }
    Ok(())
}

/// The place in the endpoint maps that a dispatch rule looking up `map` at `offset` gives its port
/// (`endpoints-PROTO-GROUP`, `offset` = place in the group × slots).
fn id_of_map(map: &str, offset: u32) -> Option<u32> {
    let group: u32 = map.strip_prefix("endpoints-")?.rsplit('-').next()?.parse().ok()?;
    Some(group * PORTS_PER_MAP + offset / crate::slots::SLOTS)
}

/// The ids the endpoint maps of `found` give the ports of `names` (from the rule that DNATs through
/// `… numgen random mod 65536 offset N map @endpoints-PROTO-G` in each port's service chain). Ports
/// with ClientIP affinity have no such rule and get none.
pub(crate) fn ids<'a>(
    found: &BTreeMap<Family, Found>,
    names: impl Iterator<Item = &'a ServicePortName>,
) -> std::collections::HashMap<ServicePortName, u32> {
    let mut out = std::collections::HashMap::new();
    for name in names {
        let chain = service_chain(name);
        if let Some(id) = found
            .values()
            .find_map(|t| t.chains.get(&chain).and_then(|c| c.id))
        {
            out.insert(name.clone(), id);
        }
    }
    out
}

/// Whether a base chain's `type T hook H priority P; policy V;` statement describes `hook`.
fn same_hook(statement: &str, hook: &BaseHook) -> bool {
    let parsed = (|| {
        let rest = statement.strip_prefix("type ")?;
        let (ty, rest) = rest.split_once(" hook ")?;
        let (h, rest) = rest.split_once(" priority ")?;
        let (prio, rest) = rest.split_once(';')?;
        let policy = match rest.trim().trim_end_matches(';').strip_prefix("policy ") {
            Some("drop") => 0,
            _ => 1,
        };
        let h = ["prerouting", "input", "forward", "output", "postrouting"]
            .iter()
            .position(|n| *n == h)? as u32;
        Some((ty.to_string(), h, priority(prio.trim())?, policy))
    })();
    parsed == Some((hook.chain_type.clone(), hook.hook, hook.priority, hook.policy))
}

/// A priority as nft writes it for the `ip`/`ip6` families: a number, or a name with an optional `+ N` or
/// `- N`.
fn priority(p: &str) -> Option<i32> {
    if let Ok(n) = p.parse() {
        return Some(n);
    }
    let mut parts = p.split_whitespace();
    let base = match parts.next()? {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        _ => return None,
    };
    match (parts.next(), parts.next().map(str::parse::<i32>)) {
        (None, _) => Some(base),
        (Some("+"), Some(Ok(n))) => Some(base + n),
        (Some("-"), Some(Ok(n))) => Some(base - n),
        _ => None,
    }
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

/// The sets and maps of the tables named `table` in `text` (`nft list` output), by family (`ip`, `ip6`),
/// then name. Chains are skipped (they are read through netlink).
pub(crate) fn parse(text: &str, table: &str) -> BTreeMap<String, BTreeMap<String, SetObj>> {
    let mut out: BTreeMap<String, BTreeMap<String, SetObj>> = BTreeMap::new();
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
        if let Some(f) = &fam
            && kind != "chain"
        {
            let els = elements.trim().trim_start_matches('{').trim_end_matches('}');
            out.entry(f.clone()).or_default().insert(
                name.clone(),
                SetObj {
                    map: kind == "map",
                    decl: decl_lines(lines.iter().map(String::as_str)),
                    elements: els
                        .split(',')
                        // Lines were trimmed and joined with one space, as nft writes an element.
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect(),
                },
            );
        }
        elements.clear();
        cur = None;
    }
    out
}

/// A declaration's statements, as both nft and the renderer may write them ([`norm_decl`]).
fn decl_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines.flat_map(|l| l.split("; ")).filter_map(norm_decl).collect()
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

/// What only `have` has and what only `want` has, of two sorted lists.
fn sorted_difference(
    have: &[netlink::Element],
    want: &[netlink::Element],
) -> (Vec<netlink::Element>, Vec<netlink::Element>) {
    let (mut gone, mut new) = (Vec::new(), Vec::new());
    let (mut h, mut w) = (have.iter().peekable(), want.iter().peekable());
    loop {
        match (h.peek(), w.peek()) {
            (Some(a), Some(b)) => match a.cmp(b) {
                std::cmp::Ordering::Less => gone.extend(h.next().cloned()),
                std::cmp::Ordering::Greater => new.extend(w.next().cloned()),
                std::cmp::Ordering::Equal => {
                    h.next();
                    w.next();
                }
            },
            (Some(_), None) => gone.extend(h.next().cloned()),
            (None, Some(_)) => new.extend(w.next().cloned()),
            (None, None) => return (gone, new),
        }
    }
}

/// The element's key (what a deletion names): everything before ` : ` in a map.
fn key_of(e: &str) -> &str {
    e.split_once(" : ").map_or(e, |(k, _)| k)
}

/// What a takeover writes, in the order it is written: `before` (an `nft -f` transaction: tables, sets
/// and chains), `elements` (one netlink batch: the element differences of the sets that stay), `after`
/// (an `nft -f` transaction deleting what is no longer wanted). All empty when nothing differs.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub before: String,
    pub elements: netlink::Batch,
    pub after: String,
    pub stats: TakeoverStats,
}

fn kind(map: bool) -> &'static str {
    if map { "map" } else { "set" }
}

/// The plan that takes the tables `found` to `wanted`. A set whose declaration changed (an affinity
/// timeout) is recreated, with every chain whose rules name it.
pub(crate) fn reconcile(
    found: &BTreeMap<Family, Found>,
    wanted: &BTreeMap<Family, TableSpec>,
    table: &str,
) -> Result<Plan, CannotReconcile> {
    let mut plan = Plan::default();
    let stats = &mut plan.stats;
    // The first transaction's steps, in order.
    let mut tables = String::new();
    let mut flushes = String::new();
    let mut set_deletes = String::new();
    let mut set_adds = String::new();
    let mut chain_adds = String::new();
    let mut bodies = String::new();
    let mut elem_text = String::new();
    // The last one's: chains emptied first (their rules may name each other and the sets), then the
    // sets (a verdict map's elements hold on to the chains they name), then the chains.
    let mut late_flushes = String::new();
    let mut late_sets = String::new();
    let mut late_chains = String::new();
    let empty = Found::default();
    for (fam, want) in wanted {
        let t = format!("{} {table}", fam.nft());
        let fail = |reason: String| CannotReconcile {
            family: fam.nft().to_string(),
            table: table.to_string(),
            reason,
        };
        let have = found.get(fam).unwrap_or(&empty);
        if !found.contains_key(fam) {
            let _ = writeln!(tables, "add table {t}");
        }
        let mut recreated = BTreeSet::new();
        // Sets the rewritten chains name: declared again (a no-op in the kernel) so that nft, which has
        // not read the ruleset, knows them.
        let mut named: BTreeSet<&str> = BTreeSet::new();
        let mut added: BTreeSet<&str> = BTreeSet::new();
        let mut decls: BTreeMap<&str, &SetSpec> = BTreeMap::new();
        for (name, w) in &want.sets {
            decls.insert(name, w);
            let decl = decl_lines(std::iter::once(w.decl.1.as_str()));
            let kept = match have.sets.get(name) {
                Some(h) if h.map == w.decl.0 && h.decl == decl => true,
                Some(h) => {
                    let _ = writeln!(set_deletes, "delete {} {t} {name}", kind(h.map));
                    recreated.insert(name.as_str());
                    false
                }
                None => false,
            };
            if !kept {
                stats.sets += 1;
                added.insert(name.as_str());
                let _ = writeln!(set_adds, "add {} {t} {name} {{ {} }}", kind(w.decl.0), w.decl.1);
            }
            if w.dynamic() {
                // Affinity entries are the clients' state: kept as they are.
                continue;
            }
            if !kept {
                // A new set gets its elements in the same transaction that creates it.
                let texts = w.element_texts();
                stats.elements += texts.len();
                for chunk in texts.chunks(1000) {
                    let _ = writeln!(elem_text, "add element {t} {name} {{ {} }}", chunk.join(", "));
                }
                continue;
            }
            match have.elements.get(name) {
                Some(Elements::Bytes(h)) => {
                    let mut wanted: Vec<netlink::Element> = w.elements.iter().map(|e| e.netlink()).collect();
                    wanted.sort_unstable();
                    let (gone, new) = sorted_difference(h, &wanted);
                    stats.elements += gone.len() + new.len();
                    // Deletions first (the batch keeps the order): a changed element keeps its key.
                    if !gone.is_empty() {
                        // The kernel finds an element by its key (and key end).
                        let gone = gone
                            .into_iter()
                            .map(|e| netlink::Element { data: None, ..e })
                            .collect();
                        plan.elements.delete(*fam, table, name, gone);
                    }
                    if !new.is_empty() {
                        plan.elements.add(*fam, table, name, new);
                    }
                }
                Some(Elements::Text(h)) => {
                    let w: BTreeSet<String> = w.element_texts().into_iter().collect();
                    let gone: Vec<&str> = h.difference(&w).map(|e| key_of(e)).collect();
                    let new: Vec<&str> = w.difference(h).map(String::as_str).collect();
                    stats.elements += gone.len() + new.len();
                    if !gone.is_empty() {
                        let _ = writeln!(set_deletes, "delete element {t} {name} {{ {} }}", gone.join(", "));
                    }
                    if !new.is_empty() {
                        let _ = writeln!(elem_text, "add element {t} {name} {{ {} }}", new.join(", "));
                    }
                }
                None => return Err(fail(format!("the elements of {name} were not read"))),
            }
        }
        let names_recreated = |rules: &[String]| {
            rules.iter().any(|r| {
                r.split_whitespace().any(|w| {
                    w.strip_prefix('@')
                        .is_some_and(|s| recreated.contains(s.trim_end_matches(['}', ','])))
                })
            })
        };
        for (name, lines) in &want.chains {
            let base = lines.first().filter(|r| r.starts_with("type "));
            let rules: Vec<&String> = lines.iter().filter(|r| !r.starts_with("type ")).collect();
            let comment = rules.last().and_then(|r| comment_of_rule(r));
            match have.chains.get(name) {
                Some(h) => {
                    let same_base = match (base, &h.hook) {
                        (None, None) => true,
                        (Some(b), Some(hook)) => same_hook(b, hook),
                        _ => false,
                    };
                    if !same_base {
                        return Err(fail(format!("base chain {name} differs")));
                    }
                    let uses_recreated = h.sets.iter().any(|s| recreated.contains(s.as_str()));
                    if h.rules == rules.len()
                        && h.last_comment.as_deref() == comment
                        && !uses_recreated
                        && !names_recreated(lines)
                    {
                        continue;
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
            if !rules.is_empty() {
                for r in &rules {
                    named.extend(
                        r.split_whitespace()
                            .filter_map(|w| w.strip_prefix('@'))
                            .map(|s| s.trim_end_matches(['}', ','])),
                    );
                }
                let body: Vec<&str> = rules.iter().map(|r| r.as_str()).collect();
                let _ = writeln!(bodies, "add chain {t} {name} {{ {}; }}", body.join("; "));
            }
        }
        for name in named {
            if let Some(w) = decls.get(name)
                && !added.contains(name)
            {
                let _ = writeln!(set_adds, "add {} {t} {name} {{ {} }}", kind(w.decl.0), w.decl.1);
            }
        }
        // What the wanted state does not have.
        let want_chains: BTreeSet<&str> = want.chains.iter().map(|(n, _)| n.as_str()).collect();
        let want_sets: BTreeSet<&str> = want.sets.iter().map(|(n, _)| n.as_str()).collect();
        for (name, h) in have
            .chains
            .iter()
            .filter(|(n, _)| !want_chains.contains(n.as_str()))
        {
            stats.chains += 1;
            // A set that is recreated first can only be deleted once no rule names it.
            let early = h.sets.iter().any(|s| recreated.contains(s.as_str()));
            let flush = if early { &mut flushes } else { &mut late_flushes };
            let _ = writeln!(flush, "flush chain {t} {name}");
            let _ = writeln!(late_chains, "delete chain {t} {name}");
        }
        for (name, h) in have.sets.iter().filter(|(n, _)| !want_sets.contains(n.as_str())) {
            stats.sets += 1;
            let _ = writeln!(late_sets, "delete {} {t} {name}", kind(h.map));
        }
    }
    plan.before = [
        tables,
        flushes,
        set_deletes,
        set_adds,
        chain_adds,
        bodies,
        elem_text,
    ]
    .concat();
    plan.after = [late_flushes, late_sets, late_chains].concat();
    Ok(plan)
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
    fn sorted_differences() {
        let e = |k: u8| netlink::Element::key(vec![k]);
        let (gone, new) = sorted_difference(&[e(1), e(2), e(4)], &[e(2), e(3), e(4), e(5)]);
        assert_eq!((gone, new), (vec![e(1)], vec![e(3), e(5)]));
        assert_eq!(sorted_difference(&[], &[]), (vec![], vec![]));
    }

    #[test]
    fn ids_from_map_names() {
        assert_eq!(id_of_map("endpoints-tcp-0", 0), Some(0));
        assert_eq!(id_of_map("endpoints-udp-3", 131072), Some(3 * PORTS_PER_MAP + 2));
        // The external maps have the same places; the service chain's internal one is what counts.
        assert_eq!(id_of_map("external-endpoints-tcp-3", 0), None);
        assert_eq!(id_of_map("service-ips", 0), None);
    }

    #[test]
    fn base_chain_statements() {
        let hook = |ty: &str, hook, priority| BaseHook {
            chain_type: ty.into(),
            hook,
            priority,
            policy: 1,
        };
        let s = "type filter hook prerouting priority dstnat - 10; policy accept;";
        assert!(same_hook(s, &hook("filter", 0, -110)));
        assert!(!same_hook(s, &hook("filter", 0, -100)));
        assert!(!same_hook(s, &hook("nat", 0, -110)));
        assert!(!same_hook(s, &hook("filter", 3, -110)));
        assert!(same_hook(
            "type nat hook postrouting priority srcnat; policy accept;",
            &hook("nat", 4, 100)
        ));
        assert!(same_hook(
            "type filter hook output priority -90; policy accept;",
            &hook("filter", 3, -90)
        ));
        assert!(!same_hook(
            "type filter hook output priority -90; policy drop;",
            &hook("filter", 3, -90)
        ));
        assert_eq!(priority("mangle + 5"), Some(-145));
        assert_eq!(priority("nonsense"), None);
    }
}
