//! The guardrails on a paused clock: figures and history in, decisions out.
use super::*;

const S: Millis = 1000;
const MIN: Millis = 60 * S;

/// The inventory's defaults: window 2m, confirm 3, max_sick 25%, 3 an
/// hour and 10 a day, cool-down 10m, relapse 30m, quarantine after 2.
fn rules() -> Rules {
    Rules::default()
}

fn node(name: &str, outlier: Option<bool>, pools: &[&str]) -> NodeSeen {
    let sick = outlier == Some(true);
    NodeSeen {
        name: name.into(),
        serving: true,
        in_rotation: true,
        outlier,
        pools: pools.iter().map(|p| p.to_string()).collect(),
        reasons: if sick {
            vec!["5xx 9.0% (54 of 600) vs peers' 0.5%".into()]
        } else {
            vec![]
        },
        figures: Figures {
            requests: 600,
            error_rate: Some(if sick { 0.09 } else { 0.005 }),
            p95_ms: Some(20.0),
            in_flight: Some(2),
        },
        pool_figures: BTreeMap::new(),
    }
}

/// Four nodes; those named in `sick` are outliers on ShopPool.
fn farm(sick: &[&str]) -> Seen {
    Seen {
        nodes: ["web01", "web02", "web03", "web04"]
            .iter()
            .map(|n| {
                if sick.contains(n) {
                    node(n, Some(true), &["ShopPool"])
                } else {
                    node(n, Some(false), &[])
                }
            })
            .collect(),
        run: None,
        min_healthy: 2,
    }
}

fn kinds(d: &[Decision]) -> Vec<(Kind, &str)> {
    d.iter().map(|d| (d.decision, d.reason.as_str())).collect()
}

fn recycle(node: &str) -> Option<Act> {
    Some(Act::Recycle {
        node: node.into(),
        pool: Some("ShopPool".into()),
    })
}

/// Evaluations every 30 s from `t`, sick as given, until one acts.
fn until_acted(h: &mut History, seen: &Seen, t: &mut Millis) -> Vec<Vec<Decision>> {
    let mut all = Vec::new();
    for _ in 0..100 {
        let (d, act) = evaluate(&rules(), h, seen, *t);
        *t += 30 * S;
        all.push(d);
        if act.is_some() {
            return all;
        }
    }
    panic!("never acted: {all:#?}");
}

#[test]
fn an_outlier_is_acted_on_only_after_confirm_consecutive_evaluations() {
    let mut h = History::default();
    let seen = farm(&["web02"]);
    let (d, act) = evaluate(&rules(), &mut h, &seen, 0);
    assert_eq!(kinds(&d), [(Kind::Watching, "confirming")]);
    assert_eq!(act, None);
    let (d, act) = evaluate(&rules(), &mut h, &seen, 30 * S);
    assert_eq!(kinds(&d), [(Kind::Watching, "confirming")]);
    assert_eq!(act, None);
    // A clean evaluation in between starts the count over.
    let (_, act) = evaluate(&rules(), &mut h, &farm(&[]), 60 * S);
    assert_eq!(act, None);
    for t in [90, 120] {
        let (_, act) = evaluate(&rules(), &mut h, &seen, t * S);
        assert_eq!(act, None);
    }
    let (d, act) = evaluate(&rules(), &mut h, &seen, 150 * S);
    assert_eq!(kinds(&d), [(Kind::Acted, "outlier")]);
    assert_eq!(d[0].node.as_deref(), Some("web02"));
    assert_eq!(d[0].pool.as_deref(), Some("ShopPool"));
    assert!(d[0].page);
    assert_eq!(act, recycle("web02"));
}

#[test]
fn unknown_is_never_sick_and_too_little_data_holds() {
    let mut h = History::default();
    // web02 cannot be judged: nothing is done about it, whatever its past.
    let mut seen = farm(&[]);
    seen.nodes[1].outlier = None;
    seen.nodes[1].reasons = vec!["unreachable".into()];
    for t in 0..5 {
        let (d, act) = evaluate(&rules(), &mut h, &seen, t * 30 * S);
        assert_eq!(kinds(&d), [(Kind::Ok, "like its peers")]);
        assert_eq!(act, None);
    }
    // Two of four known: below the quorum of three, nothing is judged,
    // not even the outlier among them; paged once.
    let mut seen = farm(&["web04"]);
    seen.nodes[0].outlier = None;
    seen.nodes[1].outlier = None;
    let mut pages = 0;
    for t in 5..12 {
        let (d, act) = evaluate(&rules(), &mut h, &seen, t * 30 * S);
        assert_eq!(kinds(&d), [(Kind::Held, "data missing")], "{d:#?}");
        assert!(d[0].detail.contains("2 of 4"), "{}", d[0].detail);
        pages += usize::from(d[0].page);
        assert_eq!(act, None);
    }
    assert_eq!(pages, 1);
}

#[test]
fn more_outliers_than_max_sick_hold_and_page_once_per_episode() {
    let mut h = History::default();
    let seen = farm(&["web02", "web03"]);
    let mut pages = 0;
    for t in 0..10 {
        let (d, act) = evaluate(&rules(), &mut h, &seen, t * 30 * S);
        assert_eq!(kinds(&d), [(Kind::Held, "farm sick")]);
        assert!(d[0].detail.contains("2 of 4 nodes"), "{}", d[0].detail);
        pages += usize::from(d[0].page);
        assert_eq!(act, None);
    }
    assert_eq!(pages, 1);
    // Over, then again: a new page.
    evaluate(&rules(), &mut h, &farm(&[]), 10 * 30 * S);
    let (d, _) = evaluate(&rules(), &mut h, &seen, 11 * 30 * S);
    assert!(d[0].page);
    // No streak survives a hold: web02 alone must be confirmed anew.
    let (d, _) = evaluate(&rules(), &mut h, &farm(&["web02"]), 12 * 30 * S);
    assert_eq!(kinds(&d), [(Kind::Watching, "confirming")]);
}

#[test]
fn a_farm_far_above_its_own_past_holds_even_with_one_outlier() {
    let mut h = History::default();
    let mut t = 0;
    // Twenty minutes of a normal farm.
    for _ in 0..40 {
        evaluate(&rules(), &mut h, &farm(&[]), t);
        t += 30 * S;
    }
    // Everything slowed together: nobody is an outlier, yet the farm is
    // at 900 ms against 20 ms; the one outlier is not acted on.
    let mut seen = farm(&["web02"]);
    for n in &mut seen.nodes {
        n.figures.p95_ms = Some(900.0);
    }
    for _ in 0..6 {
        let (d, act) = evaluate(&rules(), &mut h, &seen, t);
        assert_eq!(kinds(&d), [(Kind::Held, "farm sick")], "{d:#?}");
        assert!(
            d[0].detail.contains("900 ms against 20 ms"),
            "{}",
            d[0].detail
        );
        assert_eq!(act, None);
        t += 30 * S;
    }
}

#[test]
fn cool_down_counts_from_the_last_action_and_doubles_on_relapse_then_quarantine() {
    let mut h = History::default();
    let sick = farm(&["web03"]);
    let mut t = 0;
    until_acted(&mut h, &sick, &mut t);
    let first = t - 30 * S;
    // Healed for a while, then sick again within `relapse`: a relapse,
    // counted once; held by the cool-down of 10 min from the action.
    for _ in 0..4 {
        evaluate(&rules(), &mut h, &farm(&[]), t);
        t += 30 * S;
    }
    let mut relapses = 0;
    let mut second = None;
    for _ in 0..60 {
        let (d, act) = evaluate(&rules(), &mut h, &sick, t);
        relapses += d.iter().filter(|d| d.decision == Kind::Relapsed).count();
        if let Some(a) = act {
            assert_eq!(Some(a), recycle("web03"));
            second = Some(t);
            break;
        }
        if d.iter().any(|d| d.reason == "cool-down") {
            assert!(
                d.iter().any(|d| d.detail.contains("after 1 relapse(s)")),
                "{d:#?}"
            );
        }
        t += 30 * S;
    }
    assert_eq!(relapses, 1);
    // Doubled: 20 min from the first action, not 10.
    let second = second.expect("acted again after the cool-down");
    assert!(second >= first + 20 * MIN, "{}", (second - first) / S);
    assert!(second < first + 21 * MIN, "{}", (second - first) / S);
    // Sick again at once: the second relapse quarantines it.
    t += 30 * S;
    let mut quarantined = None;
    for _ in 0..5 {
        let (d, act) = evaluate(&rules(), &mut h, &sick, t);
        if let Some(a) = act {
            assert!(d.iter().any(|d| d.decision == Kind::Quarantined && d.page));
            quarantined = Some(a);
            break;
        }
        t += 30 * S;
    }
    assert_eq!(
        quarantined,
        Some(Act::Quarantine {
            node: "web03".into(),
            pool: Some("ShopPool".into())
        })
    );
    // And never acted on again, however long it stays sick.
    for _ in 0..200 {
        t += 30 * S;
        let (d, act) = evaluate(&rules(), &mut h, &sick, t);
        assert_eq!(act, None, "{d:#?}");
    }
}

#[test]
fn a_long_healthy_period_resets_the_back_off() {
    let mut h = History::default();
    let sick = farm(&["web03"]);
    let mut t = 0;
    until_acted(&mut h, &sick, &mut t);
    evaluate(&rules(), &mut h, &farm(&[]), t);
    t += 5 * MIN;
    // Relapse inside the window...
    until_acted(&mut h, &sick, &mut t);
    assert_eq!(h.units["web03/ShopPool"].relapses, 1);
    // ...then healthy for longer than `relapse`: back to no relapses.
    for _ in 0..70 {
        evaluate(&rules(), &mut h, &farm(&[]), t);
        t += 30 * S;
    }
    assert_eq!(h.units["web03/ShopPool"].relapses, 0);
    // Sick after all that: not a relapse, acted on after the plain confirm.
    let all = until_acted(&mut h, &sick, &mut t);
    assert_eq!(all.len(), 3);
    assert!(all.iter().flatten().all(|d| d.decision != Kind::Relapsed));
}

#[test]
fn the_budget_per_hour_and_per_day_holds() {
    let mut r = rules();
    r.per_hour = 2;
    r.per_day = 3;
    let mut h = History::default();
    let mut t = 0;
    let mut acted = Vec::new();
    // A different node sick each time, so no cool-down applies.
    for name in ["web01", "web02", "web03", "web04", "web01"] {
        let seen = farm(&[name]);
        for _ in 0..3 {
            let (d, act) = evaluate(&r, &mut h, &seen, t);
            t += 30 * S;
            if act.is_some() {
                acted.push((name, t));
            }
            if d.iter().any(|d| d.reason == "budget spent") {
                break;
            }
        }
        evaluate(&r, &mut h, &farm(&[]), t);
        t += 30 * S;
    }
    assert_eq!(acted.len(), 2, "{acted:?}");
    // An hour later a third is allowed, not a fourth that day.
    t += HOUR;
    let mut more = 0;
    for name in ["web03", "web04"] {
        let seen = farm(&[name]);
        for _ in 0..3 {
            let (_, act) = evaluate(&r, &mut h, &seen, t);
            t += 30 * S;
            more += usize::from(act.is_some());
        }
        evaluate(&r, &mut h, &farm(&[]), t);
    }
    assert_eq!(more, 1);
    t += 30 * S;
    let mut spent = false;
    for _ in 0..3 {
        let (d, act) = evaluate(&r, &mut h, &farm(&["web04"]), t);
        t += 30 * S;
        assert_eq!(act, None);
        spent |= d.iter().any(|d| d.reason == "budget spent");
    }
    assert!(spent);
    // A day after the first, the budget is back.
    t = DAY + 10 * MIN;
    let mut h2 = h.clone();
    let all = until_acted(&mut h2, &farm(&["web02"]), &mut t);
    assert!(!all.is_empty());
}

#[test]
fn the_capacity_floor_counts_nodes_already_out() {
    let mut h = History::default();
    let mut seen = farm(&["web02"]);
    seen.nodes[0].serving = false;
    seen.nodes[0].outlier = Some(false);
    seen.min_healthy = 3;
    for t in 0..6 {
        let (d, act) = evaluate(&rules(), &mut h, &seen, t * 30 * S);
        assert_eq!(act, None);
        if t >= 2 {
            assert_eq!(kinds(&d), [(Kind::Held, "capacity")], "{d:#?}");
            assert!(d[0].detail.contains("2 of 4"), "{}", d[0].detail);
        }
    }
}

#[test]
fn a_run_holding_the_farm_holds_the_guard() {
    let mut h = History::default();
    let mut seen = farm(&["web02"]);
    seen.run = Some("run 20261207T0100-abc of ops@jump".into());
    for t in 0..6 {
        let (d, act) = evaluate(&rules(), &mut h, &seen, t * 30 * S);
        assert_eq!(kinds(&d), [(Kind::Held, "run in progress")]);
        assert!(!d[0].page);
        assert_eq!(act, None);
    }
    // The run's streak does not carry over: confirmed anew after it.
    seen.run = None;
    let (d, _) = evaluate(&rules(), &mut h, &seen, 7 * 30 * S);
    assert_eq!(kinds(&d), [(Kind::Watching, "confirming")]);
}

#[test]
fn one_action_at_a_time_and_each_node_only_its_own_pool() {
    let mut h = History::default();
    let mut seen = farm(&["web02"]);
    seen.nodes[1].pools = vec!["ShopPool".into(), "ReportsPool".into()];
    let mut t = 0;
    let all = until_acted(&mut h, &seen, &mut t);
    let last = all.last().unwrap();
    let acted: Vec<_> = last.iter().filter(|d| d.decision == Kind::Acted).collect();
    assert_eq!(acted.len(), 1, "{last:#?}");
    assert!(last
        .iter()
        .any(|d| d.reason == "one at a time" && d.node.as_deref() == Some("web02")));
    // The other pool goes at the next evaluation, on its own.
    let (d, act) = evaluate(&rules(), &mut h, &seen, t);
    assert!(
        matches!(act, Some(Act::Recycle { ref pool, .. }) if pool.as_deref() == Some("ReportsPool")),
        "{d:#?}"
    );
}

#[test]
fn a_pool_like_its_peers_after_the_action_is_healed_with_before_and_after() {
    let mut h = History::default();
    let mut t = 0;
    until_acted(&mut h, &farm(&["web02"]), &mut t);
    let (d, act) = evaluate(&rules(), &mut h, &farm(&[]), t);
    assert_eq!(act, None);
    assert_eq!(kinds(&d), [(Kind::Healed, "like its peers")]);
    assert_eq!(d[0].before.as_ref().unwrap().error_rate, Some(0.09));
    assert_eq!(d[0].figures.as_ref().unwrap().error_rate, Some(0.005));
    assert!(d[0].detail.contains("9.0% 5xx"), "{}", d[0].detail);
    // Said once.
    let (d, _) = evaluate(&rules(), &mut h, &farm(&[]), t + 30 * S);
    assert_eq!(kinds(&d), [(Kind::Ok, "like its peers")]);
}

#[test]
fn history_survives_a_round_trip_through_json() {
    let mut h = History::default();
    let mut t = 0;
    until_acted(&mut h, &farm(&["web02"]), &mut t);
    let text = serde_json::to_string(&h).unwrap();
    let back: History = serde_json::from_str(&text).unwrap();
    assert_eq!(back, h);
}
