//! A configured secret (a password, a private key) that never shows in logs or errors.
//!
//! Configurations are logged and put in error contexts with `{:?}`, and a derived `Debug`
//! prints every field: a password held as a `String` leaks the moment someone debug-prints
//! the config. [`Secret`] prints as `Secret(<redacted>)` whatever it holds, and has no
//! `Display`, so the value can only leave through [`Secret::expose`], where the code that
//! sends it to the server says so.
//!
//! On the wire it is the plain string: serde is transparent and the JSON schema is the
//! schema of `String`, so the `spec` output and stored configurations do not change (the
//! `secret: true` annotations stay on the fields that hold one).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// A secret string. `Debug` never prints the value; there is no `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it (the connection's
    /// authentication). Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not even the length: it narrows a guess.
        f.write_str("Secret(<redacted>)")
    }
}

/// The schema of the string it holds, inlined like `String`'s, so that the generated
/// schemas are the same as before the type existed.
impl JsonSchema for Secret {
    fn inline_schema() -> bool {
        <String as JsonSchema>::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        <String as JsonSchema>::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        <String as JsonSchema>::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <String as JsonSchema>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)] // read only through Debug
    struct Holder {
        user: String,
        password: Option<Secret>,
        key: Secret,
    }

    #[test]
    fn debug_never_prints_the_value() {
        let holder = Holder { user: "flow".into(), password: Some("hunter2".into()), key: Secret::new("KEY-MATERIAL") };
        for text in [format!("{holder:?}"), format!("{holder:#?}")] {
            assert!(!text.contains("hunter2") && !text.contains("KEY-MATERIAL"), "{text}");
            assert!(text.contains("flow") && text.contains("Secret(<redacted>)"), "{text}");
        }
        // An empty secret looks the same as any other: Debug says nothing about the value.
        assert_eq!(format!("{:?}", Secret::default()), format!("{:?}", Secret::new("x")));
    }

    #[test]
    fn serde_and_schema_are_those_of_a_string() {
        let secret: Secret = serde_json::from_str("\"pw\"").unwrap();
        assert_eq!(secret.expose(), "pw");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"pw\"");
        assert!(serde_json::from_str::<Secret>("42").is_err());
        assert_eq!(schemars::schema_for!(Secret), schemars::schema_for!(String));
    }
}
