//! Windows NLB on this node: `Get-NlbClusterNode` for the state,
//! `Stop-NlbClusterNode -Drain -Timeout N` (it waits for the drain, so it
//! runs in the background) and `Start-NlbClusterNode`.
use super::LbMemberError;

/// `Get-NlbClusterNode`'s table, read by its header's column starts
/// (a state may be several words: `Converged as DEFAULT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlbNode {
    pub name: String,
    pub state: String,
    pub interface: String,
    pub host_id: String,
}

pub fn parse_nodes(stdout: &str) -> Result<Vec<NlbNode>, LbMemberError> {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let header = lines
        .iter()
        .position(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.first() == Some(&"Name") && words.contains(&"State")
        })
        .ok_or_else(|| {
            LbMemberError::Failed(format!(
                "Get-NlbClusterNode printed no `Name State Interface HostID` table: {}",
                stdout.trim()
            ))
        })?;
    let head = lines[header];
    let col = |name: &str| head.find(name);
    let (Some(state_at), interface_at, host_at) = (col("State"), col("Interface"), col("HostID"))
    else {
        return Err(LbMemberError::Failed(format!(
            "no State column in {head:?}"
        )));
    };
    let cut = |line: &str, from: usize, to: Option<usize>| -> String {
        let end = to.unwrap_or(line.len()).min(line.len());
        line.get(from.min(end)..end)
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let mut out = Vec::new();
    for line in &lines[header + 1..] {
        if line.trim_start().starts_with('-') {
            continue;
        }
        out.push(NlbNode {
            name: cut(line, 0, Some(state_at)),
            state: normalize(&cut(line, state_at, interface_at.or(host_at))),
            interface: interface_at.map_or(String::new(), |i| cut(line, i, host_at)),
            host_id: host_at.map_or(String::new(), |h| cut(line, h, None)),
        });
    }
    Ok(out)
}

/// This node's row: by name, case-insensitively, a short name matching
/// an FQDN; the only row when there is one.
pub fn this_node<'a>(nodes: &'a [NlbNode], name: &str) -> Result<&'a NlbNode, LbMemberError> {
    let short = |s: &str| s.split('.').next().unwrap_or(s).to_ascii_lowercase();
    nodes
        .iter()
        .find(|n| n.name.eq_ignore_ascii_case(name))
        .or_else(|| nodes.iter().find(|n| short(&n.name) == short(name)))
        .or(if nodes.len() == 1 {
            nodes.first()
        } else {
            None
        })
        .ok_or_else(|| {
            LbMemberError::NotFound(format!(
                "the NLB cluster has no node '{name}' (it has: {})",
                nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The states NLB knows, in their words; a cell cut short by a narrow
/// table (`Converged as DEF...`) or run into by the next column still
/// reads as its state.
pub const STATES: [&str; 7] = [
    "Converged as DEFAULT",
    "Converging",
    "Converged",
    "Draining",
    "Stopped",
    "Suspended",
    "Unknown",
];

fn normalize(cell: &str) -> String {
    if cell.starts_with("Converged as") {
        return STATES[0].into();
    }
    let first = cell.split_whitespace().next().unwrap_or("");
    STATES
        .iter()
        .find(|s| **s == first)
        .map_or_else(|| cell.to_string(), |s| s.to_string())
}
