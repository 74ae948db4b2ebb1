//! `appcmd list requests [/apppool.name:P] [/elapsed:N]`: the requests
//! running now (the IIS Request Monitor feature), one line each:
//! `REQUEST "<id>" (url:GET /x?y,time:4276 msec,client:localhost[,stage:S,module:M])`.
//! The separator is `,` or `, `, and the url may hold commas itself, so
//! the known keys are what splits it.

pub use crate::iis::RunningRequest;

const KEYS: [&str; 5] = ["url", "time", "client", "stage", "module"];

/// Every `REQUEST` line of the output; other lines are passed over.
pub fn parse(output: &str) -> Vec<RunningRequest> {
    output.lines().filter_map(one).collect()
}

fn one(line: &str) -> Option<RunningRequest> {
    let rest = line.trim().strip_prefix("REQUEST \"")?;
    let (id, rest) = rest.split_once('"')?;
    let body = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    // Where each known key starts (at the start, or after a comma).
    let mut starts: Vec<(usize, &str)> = KEYS
        .iter()
        .filter_map(|k| {
            let pat = format!("{k}:");
            body.match_indices(&pat)
                .find(|(i, _)| *i == 0 || body[..*i].trim_end().ends_with(','))
                .map(|(i, _)| (i, *k))
        })
        .collect();
    starts.sort();
    let value = |key: &str| -> Option<String> {
        let at = starts.iter().position(|(_, k)| *k == key)?;
        let from = starts[at].0 + key.len() + 1;
        let to = starts.get(at + 1).map_or(body.len(), |(i, _)| *i);
        Some(
            body[from..to]
                .trim()
                .trim_end_matches(',')
                .trim()
                .to_string(),
        )
    };
    let url = value("url")?;
    let (verb, url) = url.split_once(' ').unwrap_or(("", url.as_str()));
    Some(RunningRequest {
        id: id.trim().to_string(),
        verb: verb.to_string(),
        url: url.to_string(),
        elapsed_ms: value("time").and_then(|t| t.trim_end_matches("msec").trim().parse().ok()),
        client: value("client"),
        stage: value("stage"),
        module: value("module"),
    })
}
