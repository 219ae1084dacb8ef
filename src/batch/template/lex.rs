//! Pure: the lexer of query templates. [`split`] cuts a template's source into text and
//! action bodies (applying `{{-` / `-}}` trimming and dropping `{{/* */}}` comments),
//! [`tokenize`] cuts an action body into tokens.
//!
//! Invariants: every action keeps the 1-based line it starts on (errors point there, also
//! after multi-line text and actions); trimming removes white space only, never text;
//! a string literal keeps its characters exactly (escapes `\n \t \\ \" \'` only, raw
//! strings in backquotes as they are).

use super::{error, TemplateError};

/// One piece of the source: text, or the inside of an action.
pub(super) enum Piece {
    Text(String),
    Action { line: usize, body: String },
}

pub(super) fn split(source: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = source;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let mut text = rest.to_string();
            if trim_next {
                text = text.trim_start().to_string();
            }
            pieces.push(Piece::Text(text));
            break;
        };
        let mut text = rest[..open].to_string();
        line += rest[..open].matches('\n').count();
        let after_open = &rest[open + 2..];
        let trim_before =
            after_open.starts_with("- ") || after_open.starts_with("-\t") || after_open.starts_with("-\n");
        if trim_next {
            text = text.trim_start().to_string();
        }
        if trim_before {
            text = text.trim_end().to_string();
        }
        pieces.push(Piece::Text(text));
        let inner_start = if trim_before { 2 } else { 0 };
        let Some(close) = after_open.find("}}") else {
            return error(line, "unclosed action: \"{{\" without \"}}\"");
        };
        let mut body = &after_open[inner_start..close];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        let action_line = line;
        line += after_open[..close].matches('\n').count();
        let trimmed = body.trim();
        if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
            pieces.push(Piece::Action { line: action_line, body: body.to_string() });
        }
        rest = &after_open[close + 2..];
    }
    Ok(pieces)
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Dot(Vec<String>),
    DollarDot(Vec<String>),
    Var(String),
    Ident(String),
    Int(i64),
    Str(String),
    Open,
    Close,
    Pipe,
    Comma,
    Declare,
}

pub(super) fn tokenize(line: usize, body: &str) -> Result<Vec<Token>, TemplateError> {
    let chars: Vec<char> = body.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let word = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let path = |i: &mut usize| -> Vec<String> {
        let mut path = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            if *i == start {
                break;
            }
            path.push(chars[start..*i].iter().collect());
        }
        path
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1
            }
            '|' => {
                tokens.push(Token::Pipe);
                i += 1
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token::Declare);
                i += 2
            }
            '.' => tokens.push(Token::Dot(path(&mut i))),
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'.') {
                    tokens.push(Token::DollarDot(path(&mut i)));
                } else {
                    tokens.push(Token::Var(format!("${}", word(&mut i))));
                }
            }
            '"' => tokens.push(Token::Str(string_literal(line, &chars, &mut i)?)),
            '`' => {
                let start = i + 1;
                let Some(end) = chars[start..].iter().position(|c| *c == '`') else {
                    return error(line, "unterminated raw string literal");
                };
                tokens.push(Token::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text.parse().or_else(|_| error(line, format!("number {text} is out of range")))?;
                tokens.push(Token::Int(n));
            }
            c if c.is_alphabetic() || c == '_' => tokens.push(Token::Ident(word(&mut i))),
            other => return error(line, format!("unexpected character {other:?} in an action")),
        }
    }
    Ok(tokens)
}

/// The interpreted string literal starting at `chars[*i]` (a `"`); `*i` ends after its
/// closing quote.
fn string_literal(line: usize, chars: &[char], i: &mut usize) -> Result<String, TemplateError> {
    *i += 1;
    let mut text = String::new();
    loop {
        match chars.get(*i) {
            None => return error(line, "unterminated string literal"),
            Some('"') => break,
            Some('\\') => {
                *i += 1;
                match chars.get(*i) {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some(c @ ('\\' | '"' | '\'')) => text.push(*c),
                    _ => return error(line, "unsupported escape in a string literal"),
                }
            }
            Some(c) => text.push(*c),
        }
        *i += 1;
    }
    *i += 1;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(pieces: &[Piece]) -> Vec<String> {
        pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => format!("T{text:?}"),
                Piece::Action { line, body } => format!("A{line}{body:?}"),
            })
            .collect()
    }

    #[test]
    fn split_trims_white_space_only_and_keeps_action_lines() {
        let pieces = split("a \n {{- .X -}} \n b\n{{/* note */}}{{.Y}}\nc").unwrap();
        assert_eq!(shown(&pieces), ["T\"a\"", "A2\".X \"", "T\"b\\n\"", "T\"\"", "A4\".Y\"", "T\"\\nc\""]);
        // A minus that is not followed by white space is not a trim marker (`{{-3}}`).
        assert_eq!(shown(&split("x {{-3}}").unwrap()), ["T\"x \"", "A1\"-3\""]);
        let err = split("ok\n\n{{ .X").err().unwrap();
        assert_eq!(err.line, 3);
    }

    #[test]
    fn tokens_cover_paths_variables_literals_and_punctuation() {
        let tokens = tokenize(1, r#"range $i, $k := .A.B | index $.C 1 -2 "q\"\n" `raw\n` (f)"#).unwrap();
        assert_eq!(
            tokens,
            [
                Token::Ident("range".into()),
                Token::Var("$i".into()),
                Token::Comma,
                Token::Var("$k".into()),
                Token::Declare,
                Token::Dot(vec!["A".into(), "B".into()]),
                Token::Pipe,
                Token::Ident("index".into()),
                Token::DollarDot(vec!["C".into()]),
                Token::Int(1),
                Token::Int(-2),
                Token::Str("q\"\n".into()),
                Token::Str("raw\\n".into()),
                Token::Open,
                Token::Ident("f".into()),
                Token::Close,
            ]
        );
        assert_eq!(tokenize(1, ".").unwrap(), [Token::Dot(Vec::new())]);
    }

    #[test]
    fn bad_tokens_are_errors_on_their_line() {
        for bad in [r#""open"#, "`open", r#""\x""#, "99999999999999999999", "#"] {
            let err = tokenize(7, bad).unwrap_err();
            assert_eq!(err.line, 7, "{bad}: {err}");
        }
    }
}
