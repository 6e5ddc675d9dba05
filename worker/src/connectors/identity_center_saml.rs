//! Target: IAM Identity Center's trust in an external IdP's SAML signing
//! certificate (the identity source's IdP certificate).
//!
//! No API is known that sets it: a person uploads the certificate in the
//! console (Settings → Identity source → Actions → Manage authentication).
//! Paired with [`super::entra_saml`], whose saga has the trust shape: the
//! machine never calls `push` or `verify` here; the person's confirmation is
//! the hand-over, and the source's steps say what to do.

use std::sync::Arc;

use serde::Deserialize;

use super::{BoxFut, BuildContext, NewCredential, Target, TargetEntry, TargetSpec};
use crate::error::{Error, Result};
use crate::saga::Verification;

/// `[rotation.target] kind = "identity_center_saml"` (no other keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityCenterSamlConfig {}

/// The registry entry.
pub const TARGET: TargetEntry = TargetEntry {
    kind: "identity_center_saml",
    accepts: &["saml_signing_certificate"],
    parse: |t| {
        let c: IdentityCenterSamlConfig = super::from_table(t)?;
        Ok(Arc::new(c))
    },
};

impl TargetSpec for IdentityCenterSamlConfig {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn accepts(&self) -> &'static [&'static str] {
        TARGET.accepts
    }
    fn build(&self, _ctx: &BuildContext<'_>) -> Arc<dyn Target> {
        Arc::new(IdentityCenterSaml)
    }
}

pub struct IdentityCenterSaml;

fn by_hand() -> Error {
    Error::Refused { code: "ManualCredential", message: "IAM Identity Center takes an IdP certificate only in its console; a person uploads it".into() }
}

impl Target for IdentityCenterSaml {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn describe(&self) -> String {
        "IAM Identity Center identity source (IdP certificate, set in the console)".into()
    }
    fn push<'a>(&'a self, _cred: &'a NewCredential, _old_ids: &'a [String]) -> BoxFut<'a, Result<()>> {
        Box::pin(async { Err(by_hand()) })
    }
    fn verify<'a>(&'a self, _new_id: &'a str, _old_ids: &'a [String]) -> BoxFut<'a, Result<Verification>> {
        Box::pin(async { Err(by_hand()) })
    }
}
