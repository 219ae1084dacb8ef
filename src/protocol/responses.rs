//! The protocol's response messages, as the runtime expects them: camelCase keys, defaults
//! omitted (the runtime rejects unknown keys). Only [`super::emitter`] writes them; the
//! types live here so that discovery, validation and `spec` build responses without
//! depending on the writer. Captured documents and checkpoints are not here: the emitter
//! writes them from bytes on its hot path.

use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecResponse {
    pub protocol: u32,
    pub config_schema: Value,
    pub resource_config_schema: Value,
    pub documentation_url: String,
    pub resource_path_pointers: Vec<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredBinding {
    pub recommended_name: String,
    pub resource_config: Value,
    pub document_schema: Value,
    pub key: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_fallback_key: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidatedBinding {
    pub resource_path: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Response<'a> {
    Spec(&'a SpecResponse),
    Discovered {
        bindings: &'a [DiscoveredBinding],
    },
    Validated {
        bindings: &'a [ValidatedBinding],
    },
    Applied {
        #[serde(rename = "actionDescription", skip_serializing_if = "str::is_empty")]
        action_description: &'a str,
    },
    Opened {
        #[serde(rename = "explicitAcknowledgements", skip_serializing_if = "std::ops::Not::not")]
        explicit_acknowledgements: bool,
    },
    SourcedSchema {
        #[serde(skip_serializing_if = "is_zero")]
        binding: u32,
        #[serde(rename = "documentSchema")]
        document_schema: &'a Value,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
