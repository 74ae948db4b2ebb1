//! Performance counter names in the server's display language.
//!
//! typeperf takes counter paths in the display language only: on an
//! Italian Windows `\Process(*)\% Processor Time` is
//! `\Processo(*)\% Tempo processo`, and the English path fails. The names
//! are found the way PDH finds them, through the registry's counter
//! index: `Perflib\009` lists (index, English name) pairs, and
//! `Perflib\CurrentLanguage` the same indexes with the names this Windows
//! displays. Read once with `reg query` (argv only); names without an
//! entry (IIS's own objects, which are not translated) stay as they are.
use std::collections::HashMap;

/// The registry key of the English names.
pub const ENGLISH_KEY: &str = r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Perflib\009";
/// The registry key of the names in the display language.
pub const LOCAL_KEY: &str =
    r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Perflib\CurrentLanguage";

/// English ↔ displayed names of objects and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterNames {
    /// English (lowercase) → displayed.
    to_local: HashMap<String, String>,
    /// Displayed (lowercase) → English.
    to_english: HashMap<String, String>,
}

/// The (index, name) pairs of `reg query KEY /v Counter`: a `REG_MULTI_SZ`
/// printed on one line, its strings separated by a literal `\0`.
pub fn parse_reg_multi_sz(text: &str) -> Vec<(u32, String)> {
    let Some(line) = text.lines().find(|l| l.contains("REG_MULTI_SZ")) else {
        return Vec::new();
    };
    let Some((_, data)) = line.split_once("REG_MULTI_SZ") else {
        return Vec::new();
    };
    let items: Vec<&str> = data.trim().split("\\0").collect();
    items
        .chunks(2)
        .filter_map(|pair| match pair {
            [index, name] if !name.is_empty() => {
                Some((index.trim().parse().ok()?, name.to_string()))
            }
            _ => None,
        })
        .collect()
}

impl CounterNames {
    /// From the two `reg query` outputs; identity where either is empty.
    pub fn from_registry(english: &str, local: &str) -> CounterNames {
        let english = parse_reg_multi_sz(english);
        let local: HashMap<u32, String> = parse_reg_multi_sz(local).into_iter().collect();
        let mut names = CounterNames::default();
        for (index, en) in english {
            let Some(shown) = local.get(&index) else {
                continue;
            };
            if shown.eq_ignore_ascii_case(&en) {
                continue;
            }
            names
                .to_local
                .entry(en.to_lowercase())
                .or_insert_with(|| shown.clone());
            names.to_english.entry(shown.to_lowercase()).or_insert(en);
        }
        names
    }

    /// Whether any name differs from its English one.
    pub fn is_localized(&self) -> bool {
        !self.to_local.is_empty()
    }

    fn local<'a>(&'a self, english: &'a str) -> &'a str {
        self.to_local
            .get(&english.to_lowercase())
            .map_or(english, String::as_str)
    }

    /// A name as read back from typeperf's header, in English.
    pub fn english<'a>(&'a self, shown: &'a str) -> &'a str {
        self.to_english
            .get(&shown.to_lowercase())
            .map_or(shown, String::as_str)
    }

    /// `\Object(instance)\Counter` in the display language (the instance
    /// is not translated).
    pub fn localize_path(&self, path: &str) -> String {
        let Some(p) = path.strip_prefix('\\') else {
            return path.to_string();
        };
        let Some((object_part, counter)) = p.rsplit_once('\\') else {
            return path.to_string();
        };
        let (object, instance) = match object_part.split_once('(') {
            Some((o, rest)) => (o, Some(rest)),
            None => (object_part, None),
        };
        let object = self.local(object);
        let counter = self.local(counter);
        match instance {
            Some(rest) => format!(r"\{object}({rest}\{counter}"),
            None => format!(r"\{object}\{counter}"),
        }
    }

    /// A sample's counters with their object and counter names in English.
    pub fn to_english(
        &self,
        mut counters: Vec<crate::traffic::counters::Counter>,
    ) -> Vec<crate::traffic::counters::Counter> {
        for c in &mut counters {
            c.object = self.english(&c.object).to_string();
            c.counter = self.english(&c.counter).to_string();
        }
        counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reg query` as Windows prints a REG_MULTI_SZ (strings joined by a
    /// literal `\0`), an Italian server's current language.
    pub const ENGLISH: &str = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Perflib\\009\r\n    Counter    REG_MULTI_SZ    1\\01847\\02\\0System\\06\\0% Processor Time\\0186\\0Private Bytes\\0230\\0Process\\0784\\0ID Process\\0\r\n\r\n";
    pub const ITALIAN: &str = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Perflib\\CurrentLanguage\r\n    Counter    REG_MULTI_SZ    1\\01847\\02\\0Sistema\\06\\0% Tempo processo\\0186\\0Byte privati\\0230\\0Processo\\0784\\0ID processo\\0\r\n\r\n";

    #[test]
    fn english_paths_in_the_display_language_and_back() {
        let n = CounterNames::from_registry(ENGLISH, ITALIAN);
        assert!(n.is_localized());
        assert_eq!(
            n.localize_path(r"\Process(*)\% Processor Time"),
            r"\Processo(*)\% Tempo processo"
        );
        assert_eq!(
            n.localize_path(r"\Process(w3wp#1)\ID Process"),
            r"\Processo(w3wp#1)\ID processo"
        );
        // IIS's own objects are not in Perflib: kept as they are.
        assert_eq!(
            n.localize_path(r"\W3SVC_W3WP(*)\Active Requests"),
            r"\W3SVC_W3WP(*)\Active Requests"
        );
        assert_eq!(n.english("Processo"), "Process");
        assert_eq!(n.english("byte privati"), "Private Bytes");
        assert_eq!(n.english("W3SVC_W3WP"), "W3SVC_W3WP");
        // An English Windows, or no registry: nothing translated.
        let same = CounterNames::from_registry(ENGLISH, ENGLISH);
        assert!(!same.is_localized());
        assert!(!CounterNames::from_registry("", "ERROR: access denied").is_localized());
    }
}
