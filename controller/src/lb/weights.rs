//! A canary's share of the traffic, set as absolute weights.
//!
//! HAProxy's `set server B/S weight 10%` is relative to the server's
//! configured weight and rounds down: servers of weight 1 (the default)
//! get 0 — no traffic at all. So the share is made with whole weights: the
//! other servers' weights are scaled up and the canary's set to the share
//! of its own scaled weight, as close as the 0–256 range allows; read back
//! after setting; and every weight is put back to its initial value after
//! the soak, on a failed verdict, and at the start of any later run (a
//! run killed mid-soak leaves them changed).
use farm_inventory::Node;

use super::{LbError, LoadBalancer};

/// A server's weight now and as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Weight {
    pub current: u32,
    pub initial: u32,
}

impl Weight {
    pub fn changed(&self) -> bool {
        self.current != self.initial
    }
}

/// HAProxy's largest weight.
pub const MAX_WEIGHT: u32 = 256;

/// Whole weights giving each canary `share` of a normal node's traffic:
/// `(canary weights, other weights, the share made)`. Every weight is its
/// initial one times one factor, the canaries' times the share too; the
/// factor is the smallest that makes the share within a tenth of what is
/// asked (else the closest), with no weight above [`MAX_WEIGHT`].
pub fn shares(canaries: &[Weight], others: &[Weight], share: f64) -> (Vec<u32>, Vec<u32>, f64) {
    let top = canaries
        .iter()
        .chain(others)
        .map(|w| w.initial.max(1))
        .max()
        .unwrap_or(1);
    let largest = (MAX_WEIGHT / top).max(1);
    let made = |m: u32| -> f64 {
        // The share a canary of initial weight w gets: round(w·m·s)/(w·m).
        let errors: Vec<f64> = canaries
            .iter()
            .map(|w| {
                let scaled = f64::from(w.initial.max(1) * m);
                (scaled * share).round().max(1.0) / scaled
            })
            .collect();
        errors.iter().sum::<f64>() / errors.len().max(1) as f64
    };
    let mut best = 1;
    for m in 1..=largest {
        if (made(m) - share).abs() < (made(best) - share).abs() {
            best = m;
        }
        if (made(m) - share).abs() <= share * 0.1 {
            best = m;
            break;
        }
    }
    let c = canaries
        .iter()
        .map(|w| ((f64::from(w.initial.max(1) * best) * share).round() as u32).max(1))
        .collect();
    let o = others.iter().map(|w| w.initial * best).collect();
    (c, o, made(best))
}

/// Puts back to its initial value every weight of `nodes` that differs;
/// what it did, in words (empty when nothing was changed).
pub async fn restore(lb: &dyn LoadBalancer, nodes: &[Node]) -> Result<Vec<String>, LbError> {
    let Some(weights) = lb.weights(nodes).await? else {
        return Ok(Vec::new());
    };
    let changed: Vec<(&Node, Weight)> = nodes
        .iter()
        .zip(weights)
        .filter_map(|(n, w)| w.filter(Weight::changed).map(|w| (n, w)))
        .collect();
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let set: Vec<(&Node, u32)> = changed.iter().map(|(n, w)| (*n, w.initial)).collect();
    lb.set_weights(&set).await?;
    Ok(changed
        .iter()
        .map(|(n, w)| {
            format!(
                "{}: weight {} put back to its initial {}",
                n.name, w.current, w.initial
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(initial: u32) -> Weight {
        Weight {
            current: initial,
            initial,
        }
    }

    #[test]
    fn a_tenth_of_a_weight_of_one_is_one_of_ten_not_zero() {
        let (c, o, made) = shares(&[w(1)], &[w(1), w(1), w(1)], 0.10);
        assert_eq!((c, o), (vec![1], vec![10, 10, 10]));
        assert!((made - 0.10).abs() < 1e-9);
    }

    #[test]
    fn configured_weights_are_kept_in_proportion() {
        // A canary of weight 2 among servers of 4: 25% of its own share.
        let (c, o, made) = shares(&[w(2)], &[w(4), w(4)], 0.25);
        assert_eq!(o[0] / o[1], 1);
        assert!((made - 0.25).abs() <= 0.025, "{made} {c:?} {o:?}");
        assert_eq!(f64::from(c[0]) / f64::from(2 * (o[0] / 4)), made);
        // Weights near the top: the factor stays within 256.
        let (c, o, _) = shares(&[w(100)], &[w(200)], 0.01);
        assert!(o.iter().chain(&c).all(|x| *x <= MAX_WEIGHT), "{c:?} {o:?}");
        assert!(c[0] >= 1);
    }
}
