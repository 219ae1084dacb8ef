//! A table's name: its schema and its name, with the two ways the connector writes it.
//!
//! - [`TableName::quoted`] is the SQL form, each part quoted as an identifier
//!   (`"public"."my ""t"""`), safe to splice into a statement whatever the name holds;
//! - `Display` is the message form, `"public.t"` with Rust string escapes, as the Go
//!   connector names tables in its errors (a name with a quote or a newline stays readable
//!   and unambiguous).
//!
//! [`quoted_table`] and [`display_table`] are the same two forms for a borrowed pair, for
//! the callers that hold the parts separately; the validation helpers
//! `validate::{qualified, display_name}` are these functions.

use std::fmt;

use crate::pg::quote_identifier;

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> TableName {
        TableName { schema: schema.into(), name: name.into() }
    }

    /// The name for SQL: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        quoted_table(&self.schema, &self.name)
    }

    /// Both parts lower-cased, for the settings that match names case-insensitively.
    pub fn to_lowercase(&self) -> TableName {
        TableName::new(self.schema.to_lowercase(), self.name.to_lowercase())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_table(&self.schema, &self.name))
    }
}

/// `"schema"."name"`, each part quoted as an SQL identifier.
pub fn quoted_table(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_identifier(schema), quote_identifier(name))
}

/// `"schema.name"` for messages, escaped like a Rust string.
pub fn display_table(schema: &str, name: &str) -> String {
    format!("{:?}", format!("{schema}.{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_form_quotes_each_part_and_message_form_escapes() {
        let odd = TableName::new("we\"ird", "t;x\n");
        assert_eq!(odd.quoted(), "\"we\"\"ird\".\"t;x\n\"");
        assert_eq!(odd.to_string(), "\"we\\\"ird.t;x\\n\"");
        // A dot inside a part cannot be confused with the separator in the SQL form.
        assert_ne!(TableName::new("a.b", "c").quoted(), TableName::new("a", "b.c").quoted());
        assert_eq!(TableName::new("public", "t").to_string(), "\"public.t\"");
    }

    #[test]
    fn lowercase_names_compare_case_insensitively() {
        assert_eq!(TableName::new("Public", "BIG").to_lowercase(), TableName::new("public", "big"));
    }
}
