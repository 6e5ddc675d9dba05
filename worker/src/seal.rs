//! Sealing secrets with KMS, bound to one saga.
//!
//! The new credential's secret is needed by three steps (prove, push,
//! and nothing else), which may run on different workers, after crashes. So it
//! is stored — but only as KMS ciphertext whose *encryption context* names
//! the saga: a ciphertext copied into another saga's item does not decrypt,
//! and a key policy can require the context (see `infra/`). The plaintext
//! lives only in a [`SecretString`] in memory and is erased at `Finalize`.

use std::collections::HashMap;

use aws_sdk_kms::primitives::Blob;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{aws, Error, Result};

/// Encryption-context key binding a ciphertext to its saga.
pub const CONTEXT_KEY: &str = "keyturn:saga_id";

#[derive(Clone, Debug)]
pub struct Sealer {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl Sealer {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Sealer {
        Sealer { client, key_id: key_id.into() }
    }

    /// The KMS key (id, ARN or alias) secrets are sealed with.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn context(saga_id: &str) -> HashMap<String, String> {
        HashMap::from([(CONTEXT_KEY.to_string(), saga_id.to_string())])
    }

    pub async fn seal(&self, saga_id: &str, secret: &SecretString) -> Result<Vec<u8>> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(secret.expose_secret().as_bytes()))
            .set_encryption_context(Some(Self::context(saga_id)))
            .send()
            .await
            .map_err(|e| aws("kms", "Encrypt", e))?;
        out.ciphertext_blob.map(|b| b.into_inner()).ok_or_else(|| Error::Corrupt("KMS Encrypt returned no ciphertext".into()))
    }

    pub async fn open(&self, saga_id: &str, ciphertext: &[u8]) -> Result<SecretString> {
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(Self::context(saga_id)))
            .send()
            .await
            .map_err(|e| aws("kms", "Decrypt", e))?;
        let bytes = out.plaintext.ok_or_else(|| Error::Corrupt("KMS Decrypt returned no plaintext".into()))?.into_inner();
        let text = String::from_utf8(bytes).map_err(|_| Error::Corrupt("sealed secret is not UTF-8".into()))?;
        Ok(SecretString::from(text))
    }
}
