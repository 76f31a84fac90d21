//! `GET /api/call_bot/script/list`: the tenant's bot scripts, and their payload as the upstream
//! writes it (an array of scripts, each with its variables), read tolerantly.

use http::{Method, StatusCode};
use serde::{Deserialize, Deserializer};

use super::{
    CallContext, UpstreamClient, UpstreamError,
    envelope::{self, Envelope, lenient_bool, lenient_string, null_as_default},
    retry::Idempotency,
};

/// The endpoint's path.
pub(super) const PATH: &str = "/api/call_bot/script/list";

/// One bot script as the upstream lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Script {
    /// Script id.
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: String,
    /// Script name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: String,
    /// Its variables.
    #[serde(default, deserialize_with = "null_as_default")]
    pub variables: Vec<ScriptVariable>,
}

/// One variable of a script.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct ScriptVariable {
    /// Key in a contact's `mapping_variables`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub field_code: String,
    /// Display name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub field_name: String,
    /// Default/sample value.
    #[serde(default, deserialize_with = "lenient_string")]
    pub field_value: String,
    /// Input type.
    #[serde(default, deserialize_with = "lenient_string")]
    pub field_type: String,
    /// Variable kind.
    #[serde(default, rename = "type", deserialize_with = "lenient_string")]
    pub kind: String,
    /// Whether each contact must give a value.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_dynamic_attribute: bool,
}

/// The script list payload: an array (null = empty).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScriptList(pub Vec<Script>);

impl<'de> Deserialize<'de> for ScriptList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Vec<Script>>::deserialize(d).map(|v| ScriptList(v.unwrap_or_default()))
    }
}

impl UpstreamClient {
    /// `GET /api/call_bot/script/list`: the tenant's scripts, in upstream order.
    pub async fn list_scripts(&self, ctx: &CallContext) -> Result<Vec<Script>, UpstreamError> {
        let answer = self
            .call_with_token(ctx, Idempotency::Read, Method::GET, &self.endpoints.script_list, |request| request)
            .await?;
        match self.decode::<ScriptList>(&answer)? {
            Envelope::Success(ScriptList(list)) => Ok(list),
            Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: answer.status.as_u16() }),
        }
    }
}

/// Parses the body of a successful `script/list` answer (envelope, then payload) exactly as
/// [`UpstreamClient::list_scripts`] does once the HTTP exchange is over.
///
/// The criterion benches and the load generator's direct REST path measure the very parser the
/// facade runs through it (`crate::testing`), without a network in between.
pub fn parse_script_list(body: &[u8]) -> Result<Vec<Script>, UpstreamError> {
    match envelope::parse::<ScriptList>(body)
        .map_err(|e| UpstreamError::Malformed { detail: e.0, http_status: StatusCode::OK.as_u16() })?
    {
        Envelope::Success(ScriptList(list)) => Ok(list),
        Envelope::Failure { code } => Err(UpstreamError::Rejected { code, http_status: StatusCode::OK.as_u16() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_read_tolerantly_and_byte_exact() {
        let body = r#"{"status_code":9999,"payload":[{"id":"1","name":"Thông báo điểm thi 🎓","variables":[
            {"field_code":"uB131frQEU","field_name":"Tên","field_value":null,"field_type":"single_text","type":"CONTACT","is_dynamic_attribute":true},
            {"field_code":"x","is_dynamic_attribute":null,"type":""},
            {"field_code":7,"is_dynamic_attribute":"true"}]}]}"#;
        let Ok(Envelope::Success(ScriptList(list))) = envelope::parse::<ScriptList>(body.as_bytes()) else {
            panic!("parse")
        };
        assert_eq!(list[0].name, "Thông báo điểm thi 🎓");
        let v = &list[0].variables;
        assert_eq!(v[0].field_code, "uB131frQEU");
        assert_eq!(v[0].field_name, "Tên");
        assert_eq!(v[0].field_value, "");
        assert_eq!(v[0].kind, "CONTACT");
        assert!(v[0].is_dynamic_attribute);
        assert!(!v[1].is_dynamic_attribute);
        assert_eq!(v[2].field_code, "7");
        assert!(v[2].is_dynamic_attribute);
    }
}
