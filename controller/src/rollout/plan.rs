//! Batches and the capacity invariant: never more nodes out of rotation
//! than `max_unavailable`, never fewer than `min_healthy` serving —
//! counting nodes that were already out before the run.

/// How many nodes the next batch may take, given what is out now.
/// `0` means the run cannot go on without breaking the policy.
pub fn next_batch_size(
    total: usize,
    out_of_rotation: usize,
    max_unavailable: usize,
    min_healthy: usize,
    remaining: usize,
) -> usize {
    let by_max = max_unavailable.saturating_sub(out_of_rotation);
    let serving = total.saturating_sub(out_of_rotation);
    let by_min = serving.saturating_sub(min_healthy);
    by_max.min(by_min).min(remaining)
}

/// The size limit of batch number `k` (0-based) from the ramp's steps:
/// the last step applies to every later batch.
pub fn step(steps: &[usize], k: usize) -> usize {
    steps.get(k).or(steps.last()).copied().unwrap_or(1)
}

/// The batches a run will take if nothing fails, or why the policy
/// forbids the run.
pub fn batches(
    selected: &[usize],
    total: usize,
    already_out: usize,
    steps: &[usize],
    min_healthy: usize,
) -> Result<Vec<Vec<usize>>, String> {
    let mut out = Vec::new();
    let mut rest = selected;
    while !rest.is_empty() {
        let max = step(steps, out.len());
        let size = next_batch_size(total, already_out, max, min_healthy, rest.len());
        if size == 0 {
            return Err(if already_out >= max {
                format!(
                    "{already_out} node(s) are already out of rotation and max_unavailable is {max}: \
                     no other node may be taken out"
                )
            } else {
                format!(
                    "taking any node out would leave fewer than min_healthy={min_healthy} of {total} nodes serving \
                     ({already_out} already out of rotation)"
                )
            });
        }
        out.push(rest[..size].to_vec());
        rest = &rest[size..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time() {
        assert_eq!(
            batches(&[0, 1, 2, 3], 4, 0, &[1], 1).unwrap(),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
    }

    #[test]
    fn pairs_with_a_short_last_batch() {
        assert_eq!(
            batches(&[0, 1, 2, 3, 4], 5, 0, &[2], 1).unwrap(),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
    }

    #[test]
    fn min_healthy_shrinks_batches() {
        // 4 nodes, 2 may go, but 3 must serve: only 1 at a time.
        assert_eq!(batches(&[0, 1, 2, 3], 4, 0, &[2], 3).unwrap().len(), 4);
    }

    #[test]
    fn nodes_already_out_count_against_capacity() {
        // One node already down of 3, min 2 serving: nothing may go.
        assert!(batches(&[0, 1], 3, 1, &[1], 2).is_err());
        // ...and against max_unavailable.
        assert_eq!(next_batch_size(4, 1, 2, 1, 4), 1);
    }

    #[test]
    fn a_ramp_grows_batch_by_batch() {
        // [1, 2, 50%] of 10 nodes: 1, then 2, then 5 at a time.
        let ramp = farm_inventory::Ramp::parse("1,2,50%").unwrap().resolve(10);
        let all: Vec<usize> = (0..10).collect();
        let b = batches(&all, 10, 0, &ramp, 1).unwrap();
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2, 5, 2]);
    }

    #[test]
    fn percentages_round_down_at_small_farm_sizes() {
        // 25% of 3 nodes is 0.75: rounds down to 0, raised to 1.
        let steps = farm_inventory::Ramp::parse("25%").unwrap().resolve(3);
        assert_eq!(steps, [1]);
        assert_eq!(batches(&[0, 1, 2], 3, 0, &steps, 1).unwrap().len(), 3);
        // 50% of 5 is 2.
        assert_eq!(farm_inventory::Ramp::parse("50%").unwrap().resolve(5), [2]);
    }

    #[test]
    fn min_healthy_as_a_percentage_with_nodes_already_down() {
        // 10 nodes, 2 already down, min_healthy 70% = 7: at most 1 more out.
        let min = farm_inventory::Capacity::Percent(70).of(10);
        let b = batches(&[0, 1, 2, 3], 10, 2, &[3], min).unwrap();
        assert!(b.iter().all(|x| x.len() == 1), "{b:?}");
        // 3 down: none may go.
        assert!(batches(&[0], 10, 3, &[3], min).is_err());
    }

    #[test]
    fn single_node_farm_with_min_zero() {
        assert_eq!(batches(&[0], 1, 0, &[1], 0).unwrap(), vec![vec![0]]);
    }
}
