//! A pool's gauges as a traffic window gives them (the performance
//! counters' newest reading and the longest queue over the window): one
//! type for the agent that measures them and the controller that shows
//! them, with the wire form (`SiteTraffic` fields 15–21) in one place.
use serde::{Deserialize, Serialize};

use crate::v1::SiteTraffic;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolGauges {
    /// Requests waiting in the pool's HTTP.sys queue now, and the most
    /// over the window.
    pub queue: Option<u64>,
    pub queue_max: Option<u64>,
    /// Requests the queue turned away since it was made (a counter).
    pub rejected: Option<u64>,
    /// Requests the pool's workers run now.
    pub active_requests: Option<u64>,
    /// The workers' `% Processor Time` and private bytes, summed.
    pub cpu_percent: Option<f64>,
    pub private_bytes: Option<u64>,
    /// Seconds since that reading.
    pub age_s: u64,
}

impl PoolGauges {
    /// Writes the gauges into a site's traffic on the wire.
    pub fn to_wire(&self, s: &mut SiteTraffic) {
        s.queue = self.queue;
        s.queue_max = self.queue_max;
        s.rejected = self.rejected;
        s.active_requests = self.active_requests;
        s.cpu_percent = self.cpu_percent;
        s.private_bytes = self.private_bytes;
        s.gauges_age_s = Some(self.age_s);
    }

    /// A site's gauges from the wire; `None` when the agent read none.
    pub fn from_wire(s: &SiteTraffic) -> Option<PoolGauges> {
        s.gauges_age_s.map(|age_s| PoolGauges {
            queue: s.queue,
            queue_max: s.queue_max,
            rejected: s.rejected,
            active_requests: s.active_requests,
            cpu_percent: s.cpu_percent,
            private_bytes: s.private_bytes,
            age_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_cross_the_wire_unchanged() {
        let g = PoolGauges {
            queue: Some(3),
            queue_max: Some(9),
            rejected: Some(1),
            active_requests: None,
            cpu_percent: Some(12.5),
            private_bytes: Some(1 << 20),
            age_s: 4,
        };
        let mut wire = SiteTraffic::default();
        g.to_wire(&mut wire);
        assert_eq!(PoolGauges::from_wire(&wire), Some(g));
        assert_eq!(PoolGauges::from_wire(&SiteTraffic::default()), None);
    }
}
