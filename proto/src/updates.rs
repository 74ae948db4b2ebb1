//! Windows update names both sides check: classifications (by the names
//! the Windows Update Agent's categories and WSUS give them, with their
//! category GUIDs) and KB numbers.

/// Every update classification, with the category GUID a Windows Update
/// search matches (`CategoryIDs contains '<guid>'`).
pub const CLASSIFICATIONS: &[(&str, &str)] = &[
    ("Application", "5C9376AB-8CE6-464A-B136-22113DD69801"),
    ("Connectors", "434DE588-ED14-48F5-8EED-A15E09A991F6"),
    ("CriticalUpdates", "E6CF1350-C01B-414D-A61F-263D14D133B4"),
    ("DefinitionUpdates", "E0789628-CE08-4437-BE74-2495B842F43B"),
    ("DeveloperKits", "E140075D-8433-45C3-AD87-E72345B36078"),
    ("FeaturePacks", "B54E7D24-7ADD-428F-8B75-90A396FA584F"),
    ("Guidance", "9511D615-35B2-47BB-927F-F73D8E9260BB"),
    ("SecurityUpdates", "0FA1201D-4330-4FA8-8AE9-B877473B6441"),
    ("ServicePacks", "68C5B0A3-D1A6-4553-AE49-01D3A7827828"),
    ("Tools", "B4832BD8-E735-4761-8DAF-37F882276DAB"),
    ("UpdateRollups", "28BC880E-0592-4CBF-8F95-C79B17911D5F"),
    ("Updates", "CD5FFD1E-E932-4E3A-BF74-18BF0B1BBD83"),
];

/// What a patch takes when the inventory does not say: security and
/// critical updates and rollups (ansible's `win_updates` default too).
pub const DEFAULT_CLASSIFICATIONS: &[&str] =
    &["SecurityUpdates", "CriticalUpdates", "UpdateRollups"];

/// A classification's canonical name and GUID, by its name (any case,
/// spaces ignored: `Security Updates`) or its GUID.
pub fn classification(name: &str) -> Option<(&'static str, &'static str)> {
    let squeezed: String = name.chars().filter(|c| !c.is_whitespace()).collect();
    CLASSIFICATIONS
        .iter()
        .find(|(n, g)| n.eq_ignore_ascii_case(&squeezed) || g.eq_ignore_ascii_case(name.trim()))
        .copied()
}

/// `KB5031364` from `KB5031364`, `kb5031364` or `5031364`; `None` when it
/// is not a KB number (up to 8 digits).
pub fn kb(text: &str) -> Option<String> {
    let t = text.trim();
    let digits = match t.get(..2) {
        Some(p) if p.eq_ignore_ascii_case("kb") => &t[2..],
        _ => t,
    };
    (!digits.is_empty() && digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("KB{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            classification("Security Updates").map(|c| c.0),
            Some("SecurityUpdates")
        );
        assert_eq!(
            classification("0fa1201d-4330-4fa8-8ae9-b877473b6441").map(|c| c.0),
            Some("SecurityUpdates")
        );
        assert_eq!(classification("Drivers"), None);
        assert_eq!(kb("kb5031364").as_deref(), Some("KB5031364"));
        assert_eq!(kb("5031364").as_deref(), Some("KB5031364"));
        assert_eq!(kb("KB"), None);
        assert_eq!(kb("KB12a"), None);
        assert_eq!(kb("123456789"), None);
    }
}
