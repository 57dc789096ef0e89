//! The `aws-kms` key provider: each account's data key is wrapped by an AWS KMS
//! key (`Encrypt`) and unwrapped by it (`Decrypt`), bound to the account by an
//! encryption context. See [`AwsKms`].

use super::provider::{
    DataKey, KeyContext, KeyProvider, ProviderFuture, UnwrapRequest, WrapRequest,
};
use crate::error::{Error, Result};

use aws_sdk_kms::config::{timeout::TimeoutConfig, BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider as TlsProvider};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;
use zeroize::Zeroizing;

/// The provider's name, stored with every data key it wraps.
const NAME: &str = "aws-kms";

/// How many KMS requests one call has in flight at most.
const CONCURRENCY: usize = 16;

/// The default of [`AwsKmsBuilder::timeout`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest reason an error carries from the SDK, in bytes.
const REASON_MAX: usize = 240;

/// The encryption context's keys: what a wrapped data key is bound to.
const CONTEXT_ACCOUNT_ID: &str = "credential-store:account_id";
const CONTEXT_USER_ID: &str = "credential-store:user_id";
const CONTEXT_VERSION: &str = "credential-store:data_key_version";

/// A [`KeyProvider`] whose key-encryption key is an AWS KMS key: `wrap` is KMS
/// `Encrypt` of the data key's 32 bytes, `unwrap` is `Decrypt`, both with the
/// encryption context `credential-store:account_id`, `credential-store:user_id`
/// and `credential-store:data_key_version`, so that a wrapped key copied to another
/// account does not unwrap. A wrapped key is KMS's ciphertext blob in standard
/// base64.
///
/// The provider runs the AWS SDK on a runtime of its own (one worker thread), so
/// its futures can be awaited on any executor: a tokio runtime or a plain
/// `block_on`. The requests of one call run concurrently, 16 at a time.
///
/// Every KMS request (with the SDK's retries) is bounded by the
/// [timeout](AwsKmsBuilder::timeout); a call fails as soon as one of its requests
/// fails. A KMS that cannot be reached, does not answer in time, throttles or
/// fails (5xx) is [`Error::KeyProviderUnavailable`]; a wrapped key that KMS
/// refuses to decrypt (damaged, another KMS key, another account's context, access
/// denied) is [`Error::DataKeyUnreadable`]; anything else is
/// [`Error::KeyProvider`].
///
/// ```no_run
/// # fn main() -> credential_store::Result<()> {
/// use credential_store::AwsKms;
/// use std::time::Duration;
///
/// let kms = AwsKms::builder("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
///     .timeout(Duration::from_secs(3))
///     .build()?;
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "aws-kms")))]
pub struct AwsKms {
    key_id: String,
    endpoint_url: Option<String>,
    region: String,
    timeout: Duration,
    client: aws_sdk_kms::Client,
    /// `Some` until dropped: `Drop` shuts it down in the background, which never
    /// blocks, so that the provider can be dropped inside another runtime.
    runtime: Option<Runtime>,
}

/// Configures an [`AwsKms`]: [`AwsKms::builder`], then [`build`](Self::build).
///
/// What is not set comes from the AWS SDK's usual sources: the region from the
/// key's ARN, else `AWS_REGION` or the profile; the credentials from the default
/// chain (environment, profile, web identity, ECS, EC2 instance metadata).
#[cfg_attr(docsrs, doc(cfg(feature = "aws-kms")))]
pub struct AwsKmsBuilder {
    key_id: String,
    endpoint_url: Option<String>,
    region: Option<String>,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl AwsKms {
    /// A provider that wraps data keys with the KMS key `key_id`: a key id, a key
    /// ARN, an alias (`alias/credential-store`) or an alias ARN.
    pub fn builder(key_id: impl Into<String>) -> AwsKmsBuilder {
        AwsKmsBuilder {
            key_id: key_id.into(),
            endpoint_url: None,
            region: None,
            credentials: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs `future` on the provider's runtime; the returned future waits for it
    /// on any executor, and aborts it when dropped.
    fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<Spawned<T>> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| provider_error("the provider's runtime is shut down"))?;
        Ok(Spawned(runtime.spawn(future)))
    }
}

impl AwsKmsBuilder {
    /// Sends the requests to `url` instead of AWS's endpoint for the region: a
    /// VPC endpoint, or LocalStack or moto in tests (`http://127.0.0.1:5000`).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// The AWS region (`eu-west-1`). Without it: the region of the key's ARN, else
    /// the SDK's (`AWS_REGION`, the profile).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Static credentials, instead of the SDK's default credentials chain.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some(Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "credential-store",
        ));
        self
    }

    /// How long one KMS request may take, with its retries, before it fails with
    /// [`Error::KeyProviderUnavailable`]: 5 seconds unless set.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The provider: starts its runtime (one worker thread) and loads the SDK's
    /// configuration. Fails if the key id is empty or longer than 255 bytes, or
    /// if no region is configured anywhere.
    pub fn build(self) -> Result<AwsKms> {
        if self.key_id.is_empty() || self.key_id.len() > 255 {
            return Err(provider_error("the KMS key id must be 1 to 255 bytes"));
        }
        if self.timeout.is_zero() {
            return Err(provider_error("the timeout must be more than zero"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("credential-store-aws-kms")
            .enable_all()
            .build()
            .map_err(|err| provider_error(format!("cannot start its runtime: {err}")))?;

        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(TlsProvider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.timeout)
            .operation_timeout(self.timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .timeout_config(timeouts);
        if let Some(region) = self.region.clone().or_else(|| arn_region(&self.key_id)) {
            loader = loader.region(Region::new(region));
        }
        if let Some(credentials) = self.credentials {
            loader = loader.credentials_provider(credentials);
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        // Loading reads the environment and the profile files, and may ask the
        // instance metadata for the region: on the provider's runtime, waited for
        // with a channel, which blocks but does not panic inside another runtime.
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = sender.send(loader.load().await);
        });
        let sdk_config = receiver
            .recv()
            .map_err(|_| provider_error("loading the AWS configuration failed"))?;
        let region = sdk_config
            .region()
            .map(|region| region.to_string())
            .ok_or_else(|| {
                provider_error(
                    "no AWS region: set one with `region`, in AWS_REGION or in the profile",
                )
            })?;
        let client = aws_sdk_kms::Client::new(&sdk_config);

        Ok(AwsKms {
            key_id: self.key_id,
            endpoint_url: self.endpoint_url,
            region,
            timeout: self.timeout,
            client,
            runtime: Some(runtime),
        })
    }
}

impl KeyProvider for AwsKms {
    fn name(&self) -> &str {
        NAME
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn wrap<'a>(&'a self, items: &'a [WrapRequest<'a>]) -> ProviderFuture<'a, Vec<String>> {
        Box::pin(async move {
            let jobs: Vec<WrapJob> = items
                .iter()
                .map(|item| WrapJob {
                    plaintext: Zeroizing::new(item.key().expose_bytes().to_vec()),
                    context: encryption_context(item.context()),
                })
                .collect();
            let (client, key_id, timeout) =
                (self.client.clone(), self.key_id.clone(), self.timeout);
            self.spawn(in_order(jobs, move |job| {
                encrypt(client.clone(), key_id.clone(), job, timeout)
            }))?
            .await
        })
    }

    fn unwrap<'a>(&'a self, items: &'a [UnwrapRequest<'a>]) -> ProviderFuture<'a, Vec<DataKey>> {
        Box::pin(async move {
            let jobs: Vec<UnwrapJob> = items
                .iter()
                .map(|item| UnwrapJob {
                    account_id: item.context().account_id(),
                    wrapped: item.wrapped().to_owned(),
                    key_id: item.key_id().to_owned(),
                    context: encryption_context(item.context()),
                })
                .collect();
            let (client, timeout) = (self.client.clone(), self.timeout);
            self.spawn(in_order(jobs, move |job| {
                decrypt(client.clone(), job, timeout)
            }))?
            .await
        })
    }
}

/// A [`WrapRequest`], owned, for the provider's runtime.
struct WrapJob {
    plaintext: Zeroizing<Vec<u8>>,
    context: HashMap<String, String>,
}

/// An [`UnwrapRequest`], owned, for the provider's runtime.
struct UnwrapJob {
    account_id: Uuid,
    wrapped: String,
    key_id: String,
    context: HashMap<String, String>,
}

/// KMS `Encrypt` of a data key: its ciphertext blob in base64.
async fn encrypt(
    client: aws_sdk_kms::Client,
    key_id: String,
    job: WrapJob,
    timeout: Duration,
) -> Result<String> {
    let request = client
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(job.plaintext.to_vec()))
        .set_encryption_context(Some(job.context))
        .send();
    let output = match tokio::time::timeout(timeout, request).await {
        Err(_) => return Err(unavailable(timed_out(timeout))),
        Ok(result) => result.map_err(|err| match classify(&err, timeout) {
            Failure::Unavailable(reason) => unavailable(reason),
            Failure::Refused(reason) | Failure::Other(reason) => provider_error(reason),
        })?,
    };
    let blob = output
        .ciphertext_blob()
        .ok_or_else(|| provider_error("Encrypt returned no ciphertext"))?;
    Ok(BASE64.encode(blob.as_ref()))
}

/// KMS `Decrypt` of a wrapped data key, naming the KMS key that wrapped it.
async fn decrypt(
    client: aws_sdk_kms::Client,
    job: UnwrapJob,
    timeout: Duration,
) -> Result<DataKey> {
    let unreadable = |reason: String| Error::DataKeyUnreadable {
        account_id: job.account_id,
        provider: NAME.to_owned(),
        reason,
    };
    let blob = BASE64
        .decode(&job.wrapped)
        .map_err(|_| unreadable("the wrapped key is not base64".to_owned()))?;
    if blob.is_empty() {
        return Err(unreadable("the wrapped key is empty".to_owned()));
    }
    let request = client
        .decrypt()
        .key_id(job.key_id)
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context(Some(job.context))
        .send();
    let mut output = match tokio::time::timeout(timeout, request).await {
        Err(_) => return Err(unavailable(timed_out(timeout))),
        Ok(result) => result.map_err(|err| match classify(&err, timeout) {
            Failure::Unavailable(reason) => unavailable(reason),
            Failure::Refused(reason) => unreadable(reason),
            Failure::Other(reason) => provider_error(reason),
        })?,
    };
    let plaintext = Zeroizing::new(
        output
            .plaintext
            .take()
            .map(Blob::into_inner)
            .unwrap_or_default(),
    );
    DataKey::from_bytes(&plaintext).ok_or_else(|| {
        unreadable(format!(
            "it unwraps to {} bytes, not the 32 of a data key",
            plaintext.len()
        ))
    })
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms")
            .field("name", &NAME)
            .field("key_id", &self.key_id)
            .field(
                "endpoint_url",
                &self.endpoint_url.as_deref().map(without_userinfo),
            )
            .field("region", &self.region)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AwsKmsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsBuilder")
            .field("key_id", &self.key_id)
            .field(
                "endpoint_url",
                &self.endpoint_url.as_deref().map(without_userinfo),
            )
            .field("region", &self.region)
            .field("credentials", &self.credentials.as_ref().map(|_| "static"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Drop for AwsKms {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task on the provider's runtime, awaited from any executor; aborted when
/// dropped, so that a caller that gives up does not leave requests running.
struct Spawned<T>(JoinHandle<Result<T>>);

impl<T> Future for Spawned<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|err| Err(provider_error(format!("its task failed: {err}"))))
        })
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `request(job)` for every job, at most [`CONCURRENCY`] at a time, and
/// returns their results in the jobs' order; the first failure ends the call
/// (dropping the [`JoinSet`] aborts the requests still running). On the
/// provider's runtime.
async fn in_order<J, T, F, Fut>(jobs: Vec<J>, request: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(J) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let mut results: Vec<Option<T>> = std::iter::repeat_with(|| None).take(jobs.len()).collect();
    let mut jobs = jobs.into_iter().enumerate();
    let mut running = JoinSet::new();
    loop {
        while running.len() < CONCURRENCY {
            let Some((index, job)) = jobs.next() else {
                break;
            };
            let future = request(job);
            running.spawn(async move { (index, future.await) });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (index, result) =
            joined.map_err(|err| provider_error(format!("a request's task failed: {err}")))?;
        results[index] = Some(result?);
    }
    results
        .into_iter()
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| provider_error("a request got no result"))
}

/// What a wrapped data key is bound to: KMS's encryption context.
fn encryption_context(context: &KeyContext<'_>) -> HashMap<String, String> {
    HashMap::from([
        (
            CONTEXT_ACCOUNT_ID.to_owned(),
            context.account_id().to_string(),
        ),
        (CONTEXT_USER_ID.to_owned(), context.user_id().to_owned()),
        (CONTEXT_VERSION.to_owned(), context.version().to_string()),
    ])
}

/// What an SDK error means for the caller.
enum Failure {
    /// KMS could not be reached, did not answer in time, throttled or failed.
    Unavailable(String),
    /// KMS refused the ciphertext or the access to the key (on `Decrypt`: the
    /// wrapped key is unreadable).
    Refused(String),
    /// Anything else: configuration, a missing or disabled key, a bad request.
    Other(String),
}

fn classify<E>(
    err: &SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
    timeout: Duration,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => Failure::Unavailable(timed_out(timeout)),
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            Failure::Unavailable(chain(err))
        }
        SdkError::ResponseError(response) if response.raw().status().is_server_error() => {
            Failure::Unavailable(format!(
                "KMS answered HTTP {}",
                response.raw().status().as_u16()
            ))
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("");
            let reason = short(match service.err().message() {
                Some(message) if !message.is_empty() => format!("{code}: {message}"),
                _ if !code.is_empty() => code.to_owned(),
                _ => format!("KMS answered HTTP {status}"),
            });
            match code {
                "ThrottlingException"
                | "Throttling"
                | "LimitExceededException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
                | "KMSInternalException"
                | "DependencyTimeoutException"
                | "KeyUnavailableException"
                | "ServiceUnavailable"
                | "RequestTimeout"
                | "RequestTimeoutException" => Failure::Unavailable(reason),
                "InvalidCiphertextException"
                | "IncorrectKeyException"
                | "AccessDeniedException"
                | "AccessDenied" => Failure::Refused(reason),
                _ if status >= 500 || status == 429 => Failure::Unavailable(reason),
                _ => Failure::Other(reason),
            }
        }
        _ => Failure::Other(chain(err)),
    }
}

/// `err` and its sources, each shown once (`dispatch failure: io error: … :
/// Connection refused`), cut short: the SDK's own `DisplayErrorContext` adds a
/// `Debug` dump of it all.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let shown = err.to_string();
        if !reason.ends_with(&shown) {
            reason.push_str(": ");
            reason.push_str(&shown);
        }
        source = err.source();
    }
    short(reason)
}

fn timed_out(timeout: Duration) -> String {
    format!("KMS did not answer within {timeout:?}")
}

fn unavailable(reason: String) -> Error {
    Error::KeyProviderUnavailable {
        provider: NAME.to_owned(),
        reason,
    }
}

fn provider_error(reason: impl Into<String>) -> Error {
    Error::KeyProvider {
        provider: NAME.to_owned(),
        reason: reason.into(),
    }
}

/// `reason` cut to [`REASON_MAX`] bytes, on a character boundary.
fn short(mut reason: String) -> String {
    if reason.len() > REASON_MAX {
        let mut end = REASON_MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// The region of a KMS key or alias ARN (`arn:aws:kms:eu-west-1:…`).
fn arn_region(key_id: &str) -> Option<String> {
    let mut parts = key_id.splitn(6, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => {
            Some(region.to_owned())
        }
        _ => None,
    }
}

/// `url` without a `user:password@` part, for `Debug`.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_a_key_or_alias_arn() {
        assert_eq!(
            arn_region("arn:aws:kms:eu-west-1:111122223333:key/1234").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            arn_region("arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/x").as_deref(),
            Some("us-gov-west-1")
        );
        assert_eq!(arn_region("alias/credential-store"), None);
        assert_eq!(arn_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
    }

    #[test]
    fn debug_drops_userinfo() {
        assert_eq!(
            without_userinfo("http://user:pw@host:1/x@y"),
            "http://host:1/x@y"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:5000"),
            "http://127.0.0.1:5000"
        );
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let cut = short("é".repeat(200));
        assert!(cut.len() <= REASON_MAX + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
