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

/// The batches a run will take if nothing fails, or why the policy
/// forbids the run.
pub fn batches(
    selected: &[usize],
    total: usize,
    already_out: usize,
    max_unavailable: usize,
    min_healthy: usize,
) -> Result<Vec<Vec<usize>>, String> {
    if selected.is_empty() {
        return Ok(Vec::new());
    }
    let size = next_batch_size(
        total,
        already_out,
        max_unavailable,
        min_healthy,
        selected.len(),
    );
    if size == 0 {
        return Err(format!(
            "taking any node out would leave fewer than min_healthy={min_healthy} of {total} nodes serving \
             ({already_out} already out of rotation, max_unavailable={max_unavailable})"
        ));
    }
    Ok(selected.chunks(size).map(<[usize]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time() {
        assert_eq!(
            batches(&[0, 1, 2, 3], 4, 0, 1, 1).unwrap(),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
    }

    #[test]
    fn pairs_with_a_short_last_batch() {
        assert_eq!(
            batches(&[0, 1, 2, 3, 4], 5, 0, 2, 1).unwrap(),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
    }

    #[test]
    fn min_healthy_shrinks_batches() {
        // 4 nodes, 2 may go, but 3 must serve: only 1 at a time.
        assert_eq!(batches(&[0, 1, 2, 3], 4, 0, 2, 3).unwrap().len(), 4);
    }

    #[test]
    fn nodes_already_out_count_against_capacity() {
        // One node already down of 3, min 2 serving: nothing may go.
        assert!(batches(&[0, 1], 3, 1, 1, 2).is_err());
        // ...and against max_unavailable.
        assert_eq!(next_batch_size(4, 1, 2, 1, 4), 1);
    }

    #[test]
    fn single_node_farm_with_min_zero() {
        assert_eq!(batches(&[0], 1, 0, 1, 0).unwrap(), vec![vec![0]]);
    }
}
