//! The ELBv2 Query API's XML answers, read by element name (namespaces
//! ignored).
use roxmltree::{Document, Node};

farm_proto::message_error! {
    /// Why an ELBv2 answer does not parse.
    XmlError
}

/// One `TargetHealthDescriptions` member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    pub id: String,
    pub port: Option<u16>,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`,
    /// `unavailable`.
    pub state: String,
    pub reason: Option<String>,
    pub description: Option<String>,
}

fn child<'a>(n: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text(n: Node, name: &str) -> Option<String> {
    child(n, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
}

/// `DescribeTargetHealth`'s targets.
pub fn target_health(xml: &str) -> Result<Vec<TargetHealth>, XmlError> {
    let doc = Document::parse(xml).map_err(|e| XmlError(format!("the answer is not XML: {e}")))?;
    let list = doc
        .descendants()
        .find(|n| n.tag_name().name() == "TargetHealthDescriptions")
        .ok_or("no TargetHealthDescriptions in the answer")?;
    let mut out = Vec::new();
    for m in list.children().filter(|c| c.tag_name().name() == "member") {
        let target = child(m, "Target").ok_or("a member without Target")?;
        let health = child(m, "TargetHealth").ok_or("a member without TargetHealth")?;
        out.push(TargetHealth {
            id: text(target, "Id").ok_or("a Target without Id")?,
            port: text(target, "Port").and_then(|p| p.parse().ok()),
            state: text(health, "State").ok_or("a TargetHealth without State")?,
            reason: text(health, "Reason"),
            description: text(health, "Description"),
        });
    }
    Ok(out)
}

/// A target group attribute's value.
pub fn attribute(xml: &str, key: &str) -> Option<String> {
    let doc = Document::parse(xml).ok()?;
    doc.descendants()
        .filter(|n| n.tag_name().name() == "member")
        .find(|m| text(*m, "Key").as_deref() == Some(key))
        .and_then(|m| text(m, "Value"))
}

/// An `ErrorResponse`'s code and message.
pub fn error(xml: &str) -> Option<(String, String)> {
    let doc = Document::parse(xml).ok()?;
    let e = doc.descendants().find(|n| n.tag_name().name() == "Error")?;
    Some((text(e, "Code")?, text(e, "Message").unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTH: &str = r#"<DescribeTargetHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeTargetHealthResult>
    <TargetHealthDescriptions>
      <member>
        <HealthCheckPort>80</HealthCheckPort>
        <TargetHealth><State>healthy</State></TargetHealth>
        <Target><Port>80</Port><Id>i-0f76fade</Id></Target>
      </member>
      <member>
        <TargetHealth>
          <Reason>Target.DeregistrationInProgress</Reason>
          <Description>Target deregistration is in progress</Description>
          <State>draining</State>
        </TargetHealth>
        <Target><Port>80</Port><Id>i-0f76fadf</Id></Target>
      </member>
    </TargetHealthDescriptions>
  </DescribeTargetHealthResult>
  <ResponseMetadata><RequestId>c534f810-f389-11e5-9192-3fff33344cfa</RequestId></ResponseMetadata>
</DescribeTargetHealthResponse>"#;

    #[test]
    fn target_health_by_element_name() {
        let t = target_health(HEALTH).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].id, "i-0f76fade");
        assert_eq!(t[0].port, Some(80));
        assert_eq!(t[0].state, "healthy");
        assert_eq!(t[0].reason, None);
        assert_eq!(t[1].state, "draining");
        assert_eq!(
            t[1].reason.as_deref(),
            Some("Target.DeregistrationInProgress")
        );
    }

    #[test]
    fn errors_and_attributes() {
        let e = r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>TargetGroupNotFound</Code><Message>One or more target groups not found</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
        assert_eq!(
            error(e).unwrap(),
            (
                "TargetGroupNotFound".into(),
                "One or more target groups not found".into()
            )
        );
        let a = "<R><Attributes><member><Key>stickiness.enabled</Key><Value>false</Value></member><member><Key>deregistration_delay.timeout_seconds</Key><Value>300</Value></member></Attributes></R>";
        assert_eq!(
            attribute(a, "deregistration_delay.timeout_seconds").as_deref(),
            Some("300")
        );
        assert!(target_health("<x>").is_err());
    }
}
