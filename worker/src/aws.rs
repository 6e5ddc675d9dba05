//! Building AWS clients.
//!
//! Endpoints come from the standard `AWS_ENDPOINT_URL` (and the per-service
//! variants), credentials from the standard provider chain: the same binary
//! runs against AWS and against moto on loopback with no code change.
//!
//! Timeouts are explicit. SQS gets an attempt timeout *above* the 20 s long
//! poll: a client that gives up on a long poll early leaves the message it
//! was about to receive invisible until its visibility timeout runs out.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_types::timeout::TimeoutConfig;

/// Every client keyturn's engine uses.
#[derive(Clone, Debug)]
pub struct Clients {
    pub base: SdkConfig,
    pub iam: aws_sdk_iam::Client,
    /// IAM for urgent calls (an exposed key's emergency): `iam`'s
    /// configuration with an adaptive rate of its own ([`urgent_iam`]).
    pub iam_urgent: aws_sdk_iam::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub securityhub: aws_sdk_securityhub::Client,
    /// Outcome events (`PutEvents`).
    pub events: aws_sdk_eventbridge::Client,
}

/// Load the shared AWS configuration (region override optional).
pub async fn load(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(15))
            .operation_timeout(Duration::from_secs(60))
            .build(),
    );
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    loader.load().await
}

impl Clients {
    pub fn new(base: SdkConfig) -> Clients {
        // Long polls wait up to 20 s; the attempt must outlive them.
        let sqs_conf = aws_sdk_sqs::config::Builder::from(&base)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(90))
                    .build(),
            )
            .build();
        let iam = iam_client(aws_sdk_iam::config::Builder::from(&base));
        Clients {
            iam_urgent: urgent_iam(&iam),
            iam,
            sqs: aws_sdk_sqs::Client::from_conf(sqs_conf),
            sns: aws_sdk_sns::Client::new(&base),
            dynamodb: dynamodb_client(aws_sdk_dynamodb::config::Builder::from(&base)),
            kms: aws_sdk_kms::Client::new(&base),
            secrets: aws_sdk_secretsmanager::Client::new(&base),
            securityhub: aws_sdk_securityhub::Client::new(&base),
            events: aws_sdk_eventbridge::Client::new(&base),
            base,
        }
    }
}

/// A DynamoDB client whose retries start at 25 ms, not the Rust SDK's
/// 1 s: the base delay of the AWS SDK for Java's DynamoDB policy. Every
/// step's lease, heartbeat and commit is a DynamoDB call, and an emergency
/// waited up to a second behind one transient error (a conflict, a 500)
/// for a retry that usually succeeds at once. Five attempts (at most about
/// 0.4 s of backoff) instead of three; a call that still fails fails the
/// step, which the saga retries.
fn dynamodb_client(conf: aws_sdk_dynamodb::config::Builder) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::retry::RetryConfig;
    aws_sdk_dynamodb::Client::from_conf(
        conf.retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(25)).with_max_attempts(5)).build(),
    )
}

/// An IAM client. IAM's request rate is an account-wide quota, and a burst
/// of rotations meets its `Throttling` first: the SDK's adaptive retry mode
/// paces the IAM calls to the rate IAM accepts (a client-side token bucket
/// that shrinks on every `Throttling` and grows back with successes), on
/// top of the worker's own AIMD limit on steps at once ([`crate::aimd`]).
/// The bucket belongs to this client's retry partition, one per [`Clients`]
/// (one per process in production); the member-account IAM clients are made
/// from this client's configuration ([`crate::accounts`]) and share it.
pub fn iam_client(conf: aws_sdk_iam::config::Builder) -> aws_sdk_iam::Client {
    use aws_sdk_iam::config::retry::{RetryConfig, RetryPartition};
    aws_sdk_iam::Client::from_conf(conf.retry_config(RetryConfig::adaptive()).retry_partition(RetryPartition::custom(IAM_PARTITION).build()).build())
}

/// The retry partition of ordinary IAM calls.
pub const IAM_PARTITION: &str = "keyturn-iam";
/// The retry partition of urgent IAM calls (an exposed key's emergency).
pub const URGENT_IAM_PARTITION: &str = "keyturn-iam-urgent";

/// `iam` for urgent calls: the same configuration in a retry partition of
/// its own, which brings a fresh adaptive rate (a built partition carries
/// its rate; every client made from its configuration shares it), so the
/// rate that IAM's throttling of a backlog has lowered does not pace an
/// emergency's calls; their own `Throttling` slows them on their own rate
/// ([`crate::accounts::urgently`]). Made once per [`Clients`].
pub fn urgent_iam(iam: &aws_sdk_iam::Client) -> aws_sdk_iam::Client {
    use aws_sdk_iam::config::retry::RetryPartition;
    aws_sdk_iam::Client::from_conf(iam.config().to_builder().retry_partition(RetryPartition::custom(URGENT_IAM_PARTITION).build()).build())
}
