//! Kafka's `ssl.principal.mapping.rules`: how a client certificate's
//! subject becomes a principal name. Rules are tried in order; the first
//! whose pattern matches the whole subject gives the name:
//! `RULE:<pattern>/<replacement>/[L|U]` (the subject with every match of
//! the pattern replaced, `$1` naming groups, optionally lower- or
//! upper-cased), or `DEFAULT` (the subject unchanged). A subject no rule
//! matches is refused, as Kafka refuses it.

use regex::Regex;

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        /// The pattern anchored at both ends: Kafka's `matches()`.
        whole: Regex,
        pattern: Regex,
        /// In the regex crate's syntax (`${1}`).
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// Parsed SSL_PRINCIPAL_MAPPING_RULES.
#[derive(Debug, Clone)]
pub(crate) struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        PrincipalMapper {
            rules: vec![Rule::Default],
        }
    }
}

/// Reads up to the next unescaped `/`, turning `\/` into `/`; returns
/// the text and what follows the `/`.
fn until_slash(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if text[i + 1..].starts_with('/') => {
                out.push('/');
                chars.next();
            }
            '/' => return Some((out, &text[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's `$1` group references as the regex crate writes them (`${1}`),
/// so `$1abc` keeps meaning group 1 followed by `abc`.
fn java_replacement(replacement: &str) -> String {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if next == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(next);
                    }
                }
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                out.push_str(&format!("${{{digits}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

impl PrincipalMapper {
    pub(crate) fn parse(text: &str) -> Result<PrincipalMapper, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after).ok_or("a RULE needs RULE:pattern/replacement/")?;
                let (replacement, after) =
                    until_slash(after).ok_or("a RULE needs RULE:pattern/replacement/")?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                let whole = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("{pattern}: {e}"))?;
                let pattern = Regex::new(&pattern).map_err(|e| format!("{pattern}: {e}"))?;
                rules.push(Rule::Replace {
                    whole,
                    pattern,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "{rest}: expected DEFAULT or RULE:pattern/replacement/[LU]"
                ));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("{rest}: rules are separated by commas")),
            }
        }
        if rules.is_empty() {
            return Err("no rules (DEFAULT keeps the subject as it is)".into());
        }
        Ok(PrincipalMapper { rules })
    }

    /// The principal name for certificate subject `dn`, or `None` when
    /// no rule matches (the client is refused).
    pub(crate) fn map(&self, dn: &str) -> Option<String> {
        self.rules.iter().find_map(|rule| match rule {
            Rule::Default => Some(dn.to_string()),
            Rule::Replace {
                whole,
                pattern,
                replacement,
                case,
            } => whole.is_match(dn).then(|| {
                let name = pattern.replace_all(dn, replacement.as_str()).into_owned();
                match case {
                    Case::Keep => name,
                    Case::Lower => name.to_lowercase(),
                    Case::Upper => name.to_uppercase(),
                }
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_documented_example() {
        let mapper =
            PrincipalMapper::parse("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=([^,]*).*$/$1/L,DEFAULT")
                .unwrap();
        assert_eq!(
            mapper.map("CN=kafka-svc,OU=ServiceUsers,O=Acme").as_deref(),
            Some("kafka-svc")
        );
        assert_eq!(mapper.map("CN=Alice,O=Acme").as_deref(), Some("alice"));
        assert_eq!(mapper.map("O=Acme").as_deref(), Some("O=Acme"));
    }

    #[test]
    fn no_matching_rule_refuses_and_escapes_parse() {
        let mapper = PrincipalMapper::parse(r"RULE:^CN=([^,]*),O=a\/b$/$1x/U").unwrap();
        assert_eq!(mapper.map("CN=svc,O=a/b").as_deref(), Some("SVCX"));
        assert_eq!(mapper.map("CN=svc,O=other"), None);
        assert!(PrincipalMapper::parse("RULE:(/x").is_err());
        assert!(PrincipalMapper::parse("NOPE").is_err());
        assert_eq!(PrincipalMapper::default().map("CN=a").as_deref(), Some("CN=a"));
    }
}
