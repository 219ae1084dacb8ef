//! The `additional_backfill_filter` of a resource must be exactly one SQL boolean expression.
//!
//! The filter is placed into every backfill query of its table as `AND (<filter>)`. Text
//! that is not one expression on its own escapes those parentheses: `true) OR (true` turns
//! the chunk's `WHERE (key) > ($1) AND (<filter>)` into `... AND (true) OR (true)`, which
//! drops the resume condition, so every chunk reads the table from the start again and the
//! backfill never ends. A semicolon or a trailing clause (`ORDER BY`, `LIMIT`, `UNION`...)
//! would change the query in other ways. So the filter is parsed, with PostgreSQL's lexical
//! rules (strings, dollar quotes, nested comments), as the `WHERE` clause of
//! `SELECT 1 WHERE <filter>`, and accepted only when that is a single statement consisting
//! of nothing but the filter as its condition. Pure: no IO.

use sqlparser::ast::{SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Why a filter is refused, as a sentence fragment ("is not ... : <reason>").
pub fn check(filter: &str) -> Result<(), String> {
    let dialect = PostgreSqlDialect {};
    let tokens =
        Tokenizer::new(&dialect, filter).tokenize().map_err(|err| format!("it cannot be read as SQL: {err}"))?;
    if tokens.contains(&Token::SemiColon) {
        return Err("it contains a semicolon, which would end the backfill query".into());
    }
    if let Some(Token::Placeholder(placeholder)) = tokens.iter().find(|t| matches!(t, Token::Placeholder(_))) {
        return Err(format!(
            "it contains the parameter {placeholder}, which would stand for one of the backfill query's own parameters"
        ));
    }
    // The newline ends a trailing `--` comment, as the backfill query does after the filter.
    let sql = format!("SELECT 1 WHERE {filter}\n");
    let statements = Parser::parse_sql(&dialect, &sql).map_err(|err| format!("it does not parse: {err}"))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err("it is not a single expression".into());
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err("it is not a single expression".into());
    };
    let Some(condition) = &select.selection else {
        return Err("it is not a single expression".into());
    };
    // Anything the parser took as more than the condition (a closing parenthesis followed
    // by more conditions cannot parse; `ORDER BY`, `LIMIT`, `UNION`, `FOR UPDATE`, ... can)
    // shows up as a difference from the query holding the condition alone.
    if query.to_string() != format!("SELECT 1 WHERE {condition}") {
        return Err(format!(
            "it continues past its first expression ({condition}) with clauses of its own, which would change the backfill query"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn one_boolean_expression_is_accepted() {
        for filter in [
            "id > 3",
            "id % 2 = 0",
            "created_at > now() - interval '30 days'",
            "status IN ('a', 'b') AND NOT deleted",
            "data->>'kind' = 'x' OR tags @> ARRAY['t']",
            "name ~ '^a' AND name::text IS NOT DISTINCT FROM 'b'",
            "id IN (SELECT id FROM other WHERE other.ok)",
            "(a > 1) OR (b < 2)",
            "note = 'it''s ) OR (true' AND x = $$ ) $$",
            "x = 1 -- a trailing comment",
            "x = 1 /* a ) comment */ AND y = 2",
            "\"Weird Column\" = E'\\x41'",
            "ts AT TIME ZONE 'UTC' > '2024-01-01'",
            "x NOTNULL AND a = ANY('{1,2}'::int[]) AND EXISTS (SELECT 1 FROM o WHERE o.id = t.id)",
            "(a, b) > (1, 2) AND x OPERATOR(pg_catalog.=) 1 AND d #>> '{a,b}' = 'x'",
            "price::numeric(10,2) > 1.5 AND a[1] = 2 AND (c).f = 1 AND ts > CURRENT_DATE - 7",
            "body = $tag$ it's ) $ $tag$",
            "data ? 'k' AND data ?| array['a', 'b']",
        ] {
            assert_eq!(check(filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn anything_that_escapes_its_parentheses_is_refused() {
        for filter in [
            "true) OR (true",
            "true)) OR ((true",
            "id > 3) OR (1 = 1",
            "true; DROP TABLE t",
            "true;",
            "true ORDER BY 1",
            "true LIMIT 1",
            "true UNION SELECT 1",
            "true GROUP BY 1",
            "true FOR UPDATE",
            "true) --",
            "id > $1",
            "'unterminated",
            "/* unterminated comment",
            "/* nested /* */ ) OR (true */",
            "",
        ] {
            let refused = check(filter);
            assert!(refused.is_err(), "{filter:?} was accepted");
        }
        let reason = check("true) OR (true").unwrap_err();
        assert!(reason.starts_with("it does not parse"), "{reason}");
        assert!(check("true; DROP TABLE t").unwrap_err().contains("semicolon"));
        assert!(check("true LIMIT 1").unwrap_err().contains("clauses"));
        assert!(check("id > $1").unwrap_err().contains("parameter $1"));
    }
}
