//! The capacity invariant, decided in one place: never more nodes out of
//! rotation than `max_unavailable`, never fewer than `min_healthy` serving —
//! counting nodes that were out before the run and failed nodes left out.
//! The scheduler asks [`Capacity::may_start`] before every node it starts.

/// Nodes out of rotation right now, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Out {
    /// Out before the run (drained, down, unhealthy, unreachable), or
    /// found out of rotation when a run was resumed.
    pub before: usize,
    /// Nodes of this run that failed and were left out.
    pub failed: usize,
    /// Nodes of this run at work now (drained, or being operated on).
    pub at_work: usize,
}

impl Out {
    pub fn total(&self) -> usize {
        self.before + self.failed + self.at_work
    }
}

/// Why no (further) node may be taken out now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    MaxUnavailable { limit: usize, out: Out },
    MinHealthy { min: usize, total: usize, out: Out },
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let explain = |out: &Out| {
            let mut parts = Vec::new();
            if out.before > 0 {
                parts.push(format!("{} already out of rotation", out.before));
            }
            if out.failed > 0 {
                parts.push(format!("{} failed and left out", out.failed));
            }
            if out.at_work > 0 {
                parts.push(format!("{} at work", out.at_work));
            }
            if parts.is_empty() {
                "none out".to_string()
            } else {
                parts.join(", ")
            }
        };
        match self {
            Blocked::MaxUnavailable { limit, out } => write!(
                f,
                "{} node(s) are out of rotation ({}) and max_unavailable is {limit}: no other node may be taken out",
                out.total(),
                explain(out)
            ),
            Blocked::MinHealthy { min, total, out } => write!(
                f,
                "taking another node out would leave fewer than min_healthy={min} of {total} nodes serving ({})",
                explain(out)
            ),
        }
    }
}

/// The limits of a run, resolved for its farm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Every node of the farm.
    pub total: usize,
    pub min_healthy: usize,
    /// `max_unavailable` per stage of the ramp; the last repeats.
    pub steps: Vec<usize>,
}

impl Capacity {
    pub fn new(total: usize, min_healthy: usize, steps: &[usize]) -> Self {
        Capacity {
            total,
            min_healthy,
            steps: steps.to_vec(),
        }
    }

    /// The limit of ramp stage `k` (batch `k` of a batch run).
    pub fn step(&self, k: usize) -> usize {
        self.steps
            .get(k)
            .or(self.steps.last())
            .copied()
            .unwrap_or(1)
    }

    /// The limit once `succeeded` nodes are done: the ramp grows after
    /// successes. Stage `k` lasts until its own step's worth of nodes has
    /// succeeded ([1, 2, 25%]: one node alone; after it, two at a time;
    /// after three in all, 25% at a time) — the same sizes a batch run
    /// takes, without its barriers.
    pub fn window(&self, succeeded: usize) -> usize {
        let mut done_by_stage = 0;
        for k in 0..self.steps.len() {
            done_by_stage += self.step(k);
            if succeeded < done_by_stage {
                return self.step(k);
            }
        }
        self.step(self.steps.len())
    }

    /// The check before every start: may one more node leave rotation,
    /// with `out` out now and `limit` the current max_unavailable?
    pub fn may_start(&self, out: Out, limit: usize) -> Result<(), Blocked> {
        let after = out.total() + 1;
        if after > limit {
            return Err(Blocked::MaxUnavailable { limit, out });
        }
        if self.total.saturating_sub(after) < self.min_healthy {
            return Err(Blocked::MinHealthy {
                min: self.min_healthy,
                total: self.total,
                out,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Capacity as C;

    fn out(before: usize, failed: usize, at_work: usize) -> Out {
        Out {
            before,
            failed,
            at_work,
        }
    }

    #[test]
    fn max_unavailable_counts_every_node_out() {
        let c = C::new(4, 1, &[2]);
        assert!(c.may_start(out(0, 0, 1), 2).is_ok());
        assert!(c.may_start(out(0, 0, 2), 2).is_err());
        assert!(c.may_start(out(1, 0, 1), 2).is_err(), "already out counts");
        assert!(
            c.may_start(out(0, 1, 1), 2).is_err(),
            "failed left out counts"
        );
    }

    #[test]
    fn min_healthy_counts_nodes_already_down() {
        // 8 nodes, one drained by hand, min 6: one more at most.
        let c = C::new(8, 6, &[4]);
        assert!(c.may_start(out(1, 0, 0), 4).is_ok());
        let e = c.may_start(out(1, 0, 1), 4).unwrap_err();
        assert!(matches!(e, Blocked::MinHealthy { .. }));
        let text = e.to_string();
        assert!(
            text.contains("min_healthy=6") && text.contains("1 already out"),
            "{text}"
        );
    }

    #[test]
    fn the_ramp_grows_with_successes() {
        // [1, 2, 5] of 10: 1 alone, then 2 until 3 done, then 5.
        let c = C::new(10, 1, &[1, 2, 5]);
        let w: Vec<usize> = (0..8).map(|s| c.window(s)).collect();
        assert_eq!(w, [1, 2, 2, 5, 5, 5, 5, 5]);
        assert_eq!(C::new(4, 1, &[1]).window(3), 1);
        assert_eq!(c.step(7), 5);
    }

    #[test]
    fn single_node_farm_with_min_zero() {
        assert!(C::new(1, 0, &[1]).may_start(Out::default(), 1).is_ok());
        assert!(C::new(1, 1, &[1]).may_start(Out::default(), 1).is_err());
    }
}
