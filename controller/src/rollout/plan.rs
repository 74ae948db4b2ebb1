//! What a run will do if nothing fails and every node takes as long: the
//! waves of nodes out of rotation at the same time, decided by the same
//! [`Capacity`] check the scheduler uses. `farmctl plan` shows them, and a
//! run is refused before anything is touched when no node could start.
use farm_inventory::Strategy;

use crate::capacity::{Blocked, Capacity, Out};

/// The waves of a run: `waves[k]` are the nodes out together in step `k`.
/// With `canary`, the first wave is one node.
pub fn waves(
    selected: &[usize],
    cap: &Capacity,
    before: usize,
    strategy: Strategy,
    canary: bool,
) -> Result<Vec<Vec<usize>>, Blocked> {
    let mut out = Vec::new();
    let mut rest = selected;
    let mut succeeded = 0;
    while !rest.is_empty() {
        let mut limit = match strategy {
            Strategy::Batch => cap.step(out.len()),
            Strategy::Window => cap.window(succeeded),
        };
        if canary && out.is_empty() {
            limit = limit.min(1);
        }
        let mut wave = Vec::new();
        for &i in rest {
            let now = Out {
                before,
                failed: 0,
                at_work: wave.len(),
            };
            match cap.may_start(now, limit) {
                Ok(()) => wave.push(i),
                Err(blocked) if wave.is_empty() => return Err(blocked),
                Err(_) => break,
            }
        }
        rest = &rest[wave.len()..];
        succeeded += wave.len();
        out.push(wave);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use Capacity as C;

    fn sizes(w: &[Vec<usize>]) -> Vec<usize> {
        w.iter().map(Vec::len).collect()
    }

    #[test]
    fn one_at_a_time() {
        let w = waves(
            &[0, 1, 2, 3],
            &C::new(4, 1, &[1]),
            0,
            Strategy::Window,
            false,
        )
        .unwrap();
        assert_eq!(w, vec![vec![0], vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn pairs_with_a_short_last_wave() {
        let w = waves(
            &[0, 1, 2, 3, 4],
            &C::new(5, 1, &[2]),
            0,
            Strategy::Batch,
            false,
        )
        .unwrap();
        assert_eq!(w, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn min_healthy_shrinks_waves() {
        // 4 nodes, 2 may go, but 3 must serve: only 1 at a time.
        let w = waves(
            &[0, 1, 2, 3],
            &C::new(4, 3, &[2]),
            0,
            Strategy::Window,
            false,
        )
        .unwrap();
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn nodes_already_out_count_against_capacity() {
        // One node already down of 3, min 2 serving: nothing may go.
        let e = waves(&[0, 1], &C::new(3, 2, &[1]), 1, Strategy::Window, false).unwrap_err();
        assert!(matches!(e, Blocked::MaxUnavailable { .. }), "{e}");
        assert!(waves(&[0, 1], &C::new(3, 2, &[2]), 1, Strategy::Window, false).is_err());
        // ...and against max_unavailable.
        let w = waves(&[0, 1, 2], &C::new(4, 1, &[2]), 1, Strategy::Batch, false).unwrap();
        assert_eq!(sizes(&w), [1, 1, 1]);
    }

    #[test]
    fn a_ramp_grows_wave_by_wave_in_both_strategies() {
        // [1, 2, 50%] of 10 nodes: 1, then 2, then 5 at a time.
        let ramp = farm_inventory::Ramp::parse("1,2,50%").unwrap().resolve(10);
        let all: Vec<usize> = (0..10).collect();
        for s in [Strategy::Batch, Strategy::Window] {
            let w = waves(&all, &C::new(10, 1, &ramp), 0, s, false).unwrap();
            assert_eq!(sizes(&w), [1, 2, 5, 2], "{s:?}");
        }
    }

    #[test]
    fn a_canary_goes_alone() {
        let all: Vec<usize> = (0..6).collect();
        let w = waves(&all, &C::new(6, 1, &[2]), 0, Strategy::Window, true).unwrap();
        assert_eq!(sizes(&w), [1, 2, 2, 1]);
    }

    #[test]
    fn percentages_round_down_at_small_farm_sizes() {
        // 25% of 3 nodes is 0.75: rounds down to 0, raised to 1.
        let steps = farm_inventory::Ramp::parse("25%").unwrap().resolve(3);
        assert_eq!(steps, [1]);
        let w = waves(
            &[0, 1, 2],
            &C::new(3, 1, &steps),
            0,
            Strategy::Window,
            false,
        )
        .unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(farm_inventory::Ramp::parse("50%").unwrap().resolve(5), [2]);
    }

    #[test]
    fn min_healthy_as_a_percentage_with_nodes_already_down() {
        // 10 nodes, 2 already down, min_healthy 70% = 7: at most 1 more out.
        let min = farm_inventory::Capacity::Percent(70).of(10);
        let w = waves(
            &[0, 1, 2, 3],
            &C::new(10, min, &[3]),
            2,
            Strategy::Window,
            false,
        )
        .unwrap();
        assert!(w.iter().all(|x| x.len() == 1), "{w:?}");
        // 3 down: none may go.
        assert!(waves(&[0], &C::new(10, min, &[3]), 3, Strategy::Window, false).is_err());
    }
}
