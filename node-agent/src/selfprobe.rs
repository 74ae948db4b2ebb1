//! The agent looking at its own sites, the way a load balancer would:
//! every started site's HTTP bindings, through loopback, with the
//! binding's host name.
use std::time::Duration;

use crate::iis::Iis;

farm_proto::message_error! {
    /// Why the node's own sites are not healthy.
    SelfProbeError
}

/// Ok when every HTTP binding of every started site answers below 500.
pub async fn sites_healthy(iis: &dyn Iis) -> Result<(), SelfProbeError> {
    let status = iis
        .status()
        .await
        .map_err(|e| SelfProbeError(format!("could not read IIS state: {e}")))?;
    if !status.iis_running() {
        return Err(SelfProbeError("IIS is not running".into()));
    }
    let mut checked = 0;
    for site in status
        .sites
        .iter()
        .filter(|s| s.state.eq_ignore_ascii_case("started"))
    {
        for b in &site.bindings {
            let Some((ip, port, host)) = http_binding(b) else {
                continue;
            };
            let (code, _) =
                farm_proto::http::get(&ip, port, host.as_deref(), "/", Duration::from_secs(5))
                    .await
                    .map_err(|e| SelfProbeError(format!("site {}: {e}", site.name)))?;
            if code >= 500 {
                return Err(SelfProbeError(format!("site {} answers {code}", site.name)));
            }
            checked += 1;
        }
    }
    if checked == 0 {
        return Err(SelfProbeError(
            "no started site with an HTTP binding to check".into(),
        ));
    }
    Ok(())
}

/// `http/*:80:shop.example.com` → (`127.0.0.1`, 80, Some(host)).
fn http_binding(b: &str) -> Option<(String, u16, Option<String>)> {
    let (proto, rest) = b.split_once('/')?;
    if !proto.eq_ignore_ascii_case("http") {
        return None;
    }
    let (addr, host) = rest.rsplit_once(':')?;
    let (ip, port) = addr.rsplit_once(':')?;
    let ip = match ip {
        "*" | "" | "0.0.0.0" => "127.0.0.1".to_string(),
        other => other.trim_matches(['[', ']']).to_string(),
    };
    Some((
        ip,
        port.parse().ok()?,
        (!host.is_empty()).then(|| host.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bindings() {
        assert_eq!(
            super::http_binding("http/*:80:shop.example.com"),
            Some(("127.0.0.1".into(), 80, Some("shop.example.com".into())))
        );
        assert_eq!(
            super::http_binding("HTTP/10.0.0.5:8080:"),
            Some(("10.0.0.5".into(), 8080, None))
        );
        assert_eq!(super::http_binding("https/*:443:x"), None);
        assert_eq!(super::http_binding("net.tcp/808:*"), None);
    }
}
