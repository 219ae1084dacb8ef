//! Discovery filters: schema include/exclude lists and `table_patterns` globs.
//!
//! Glob syntax (as the Go connector's): patterns are anchored; `*` matches any run of
//! characters and `?` one character; `\c` matches `c` literally; one unescaped `.` splits
//! the pattern into a schema part and a table part, and without one the pattern matches
//! the table name in any schema.

/// One parsed `table_patterns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: Option<Vec<Token>>,
    table: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyRun,
    AnyOne,
}

impl TablePattern {
    /// Parse a pattern; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<TablePattern, String> {
        if pattern.is_empty() {
            return Err("the pattern is empty".into());
        }
        let mut parts: Vec<Vec<Token>> = vec![Vec::new()];
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '\\' => Token::Literal(chars.next().ok_or("the pattern ends with an unfinished \\ escape")?),
                '*' => Token::AnyRun,
                '?' => Token::AnyOne,
                '.' => {
                    parts.push(Vec::new());
                    continue;
                }
                other => Token::Literal(other),
            };
            if let Some(last) = parts.last_mut() {
                last.push(token);
            }
        }
        match parts.len() {
            1 => Ok(TablePattern { schema: None, table: parts.remove(0) }),
            2 => {
                let table = parts.remove(1);
                let schema = parts.remove(0);
                if schema.is_empty() {
                    return Err("the schema part before \".\" is empty".into());
                }
                if table.is_empty() {
                    return Err("the table part after \".\" is empty".into());
                }
                Ok(TablePattern { schema: Some(schema), table })
            }
            _ => Err("more than one unescaped \".\" (escape dots in names as \\.)".into()),
        }
    }

    pub fn matches(&self, schema: &str, table: &str) -> bool {
        let schema_ok = match &self.schema {
            Some(tokens) => glob_match(tokens, &schema.chars().collect::<Vec<_>>()),
            None => true,
        };
        schema_ok && glob_match(&self.table, &table.chars().collect::<Vec<_>>())
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice, no recursion.
fn glob_match(tokens: &[Token], text: &[char]) -> bool {
    let (mut t, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::AnyRun) => {
                star = Some((t, s));
                t += 1;
            }
            Some(Token::AnyOne) => {
                t += 1;
                s += 1;
            }
            Some(Token::Literal(c)) if *c == text[s] => {
                t += 1;
                s += 1;
            }
            _ => match star {
                Some((star_t, star_s)) => {
                    t = star_t + 1;
                    s = star_s + 1;
                    star = Some((star_t, star_s + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t.min(tokens.len())..].iter().all(|token| *token == Token::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_anchored_with_wildcards_and_escapes() {
        let p = TablePattern::parse("public.event*").unwrap();
        assert!(p.matches("public", "events"));
        assert!(p.matches("public", "event"));
        assert!(!p.matches("other", "events"));
        assert!(!p.matches("public", "my_events"));
        let any_schema = TablePattern::parse("?lpha").unwrap();
        assert!(any_schema.matches("x", "alpha"));
        assert!(!any_schema.matches("x", "alphas"));
        let escaped = TablePattern::parse(r"s.a\.b\*").unwrap();
        assert!(escaped.matches("s", "a.b*"));
        assert!(!escaped.matches("s", "a.bc"));
        assert!(TablePattern::parse("*").unwrap().matches("any", "thing"));
    }

    #[test]
    fn malformed_patterns_are_rejected_with_a_reason() {
        assert!(TablePattern::parse("").is_err());
        assert!(TablePattern::parse(".t").is_err());
        assert!(TablePattern::parse("s.").is_err());
        assert!(TablePattern::parse("a.b.c").is_err());
        assert!(TablePattern::parse("abc\\").is_err());
    }
}
