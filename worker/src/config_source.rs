//! Where the configuration comes from, and picking up new versions.
//!
//! `--config` / `KEYTURN_CONFIG` is one of:
//! * a file path (`keyturn.toml`, the default);
//! * `ssm:<parameter name>` — an SSM Parameter Store parameter (String or
//!   SecureString), e.g. `ssm:/keyturn/config`;
//! * `s3://<bucket>/<key>` — an S3 object.
//!
//! So the image and the Lambda zip carry no configuration: the stack keeps
//! it in a parameter and passes its name. The long-running worker looks for
//! a new version at every sweep and on SIGHUP ([`crate::worker::watch_config`]):
//! a valid new version replaces the rotations at once (sagas in flight go
//! on); an invalid one is refused — logged and announced on the topic
//! (`keyturn.config_rejected`) once per version — and the old one keeps
//! running. `[aws]` and `[worker]` are read at start only: a change there is
//! reported and needs a restart.

use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::error::{aws, Error, Result};

/// A configuration source, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Ssm(String),
    S3 { bucket: String, key: String },
}

impl ConfigSource {
    /// Recognise the form; an incomplete `ssm:` or `s3://` form is refused
    /// here, before any AWS call.
    pub fn parse(s: &str) -> std::result::Result<ConfigSource, String> {
        if let Some(name) = s.strip_prefix("ssm:") {
            if name.trim().is_empty() {
                return Err(format!("--config {s:?}: name the parameter, e.g. ssm:/keyturn/config"));
            }
            return Ok(ConfigSource::Ssm(name.to_string()));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(ConfigSource::S3 { bucket: bucket.into(), key: key.into() }),
                _ => Err(format!("--config {s:?}: name the bucket and the object key, e.g. s3://my-bucket/keyturn.toml")),
            };
        }
        if s.is_empty() {
            return Err("--config is empty: give a file path, ssm:<parameter name> or s3://<bucket>/<key>".into());
        }
        Ok(ConfigSource::File(PathBuf::from(s)))
    }

    /// As written (for messages).
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Ssm(n) => format!("ssm:{n}"),
            ConfigSource::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }

    pub fn needs_aws(&self) -> bool {
        !matches!(self, ConfigSource::File(_))
    }

    /// The text and a version label (SSM parameter version, S3 ETag, or a
    /// hash of a file's content).
    pub async fn fetch(&self, sdk: Option<&aws_config::SdkConfig>) -> Result<(String, String)> {
        match self {
            ConfigSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Config(format!("{}: cannot read: {e}", p.display())))?;
                let version = format!("sha-{:016x}", fnv(&text));
                Ok((text, version))
            }
            ConfigSource::Ssm(name) => {
                let sdk = sdk.ok_or_else(|| Error::Config("an ssm: configuration needs AWS credentials and a region".into()))?;
                let out = aws_sdk_ssm::Client::new(sdk)
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| aws("ssm", "GetParameter", e))?;
                let p = out.parameter().ok_or_else(|| Error::Config(format!("ssm:{name}: no parameter")))?;
                Ok((p.value().unwrap_or_default().to_string(), format!("v{}", p.version())))
            }
            ConfigSource::S3 { bucket, key } => {
                let sdk = sdk.ok_or_else(|| Error::Config("an s3:// configuration needs AWS credentials and a region".into()))?;
                let out = aws_sdk_s3::Client::new(sdk).get_object().bucket(bucket).key(key).send().await.map_err(|e| aws("s3", "GetObject", e))?;
                let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_string();
                let bytes = out.body.collect().await.map_err(|e| Error::Config(format!("s3://{bucket}/{key}: cannot read the object: {e}")))?.into_bytes();
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| Error::Config(format!("s3://{bucket}/{key}: not UTF-8 text")))?;
                Ok((text, format!("etag-{etag}")))
            }
        }
    }

    /// Fetch and parse: errors name the source like file errors do.
    pub async fn load(&self, sdk: Option<&aws_config::SdkConfig>) -> std::result::Result<(Config, String), LoadError> {
        let (text, version) = self.fetch(sdk).await.map_err(LoadError::Fetch)?;
        let cfg = Config::parse(&text).map_err(|message| LoadError::Invalid(ConfigError { path: PathBuf::from(self.describe()), message }))?;
        Ok((cfg, version))
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The source could not be read (AWS error, missing file).
    #[error("{0}")]
    Fetch(Error),
    /// It was read and is invalid.
    #[error("{0}")]
    Invalid(ConfigError),
}

/// FNV-1a: a stable content hash for file versions (no crypto needed).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_recognised() {
        assert_eq!(ConfigSource::parse("keyturn.toml"), Ok(ConfigSource::File("keyturn.toml".into())));
        assert_eq!(ConfigSource::parse("ssm:/keyturn/config"), Ok(ConfigSource::Ssm("/keyturn/config".into())));
        assert_eq!(ConfigSource::parse("s3://b/k/keyturn.toml"), Ok(ConfigSource::S3 { bucket: "b".into(), key: "k/keyturn.toml".into() }));
        for bad in ["s3://nokey", "s3://nokey/", "s3:///key", "s3://", "ssm:", "ssm: ", ""] {
            assert!(ConfigSource::parse(bad).is_err(), "{bad:?} is refused before any call");
        }
        assert_eq!(ConfigSource::parse("ssm:/x").unwrap().describe(), "ssm:/x");
        assert!(!ConfigSource::parse("a.toml").unwrap().needs_aws());
        assert_ne!(fnv("a"), fnv("b"));
    }
}
