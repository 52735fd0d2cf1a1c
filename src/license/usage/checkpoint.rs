//! Checkpoints: a container of the publisher signs the head of a log ([`UsageStatement`],
//! envelope kind `UsageCheckpoint`), committing to every record before it. Checking one
//! follows the trust chain: publisher key → container certificate → the container-signed
//! statement → the digest of this log's head ([`verify_checkpoint`]).

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::log::{Checkpoint, LogHeader, checkpoint_digest};
use crate::license::ContainerCertificate;
use crate::license::envelope::{Envelope, Kind};

/// What keeps a container's usage-signature numbers from going back: it decides whether a
/// number reused or gone back in a log is evidence, or may be the customer's replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CounterAnchor {
    /// The count lives only in the container's state (a software container's file): a copy
    /// of the file put back counts again from where the copy was, so the numbers prove
    /// nothing about signatures made since.
    #[default]
    Unanchored,
    /// The count is anchored in the machine's TPM NV monotonic counter: the container does
    /// not open from an older copy of its file.
    Tpm,
    /// The count is kept in a dongle's firmware, out of the customer's reach.
    Dongle,
}

impl CounterAnchor {
    /// Whether the numbers are evidence (they cannot be put back).
    pub fn is_anchored(self) -> bool {
        self != CounterAnchor::Unanchored
    }

    /// In words, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            CounterAnchor::Unanchored => "unanchored (kept in the container's file only)",
            CounterAnchor::Tpm => "anchored in the machine's TPM counter",
            CounterAnchor::Dongle => "anchored in the dongle's firmware",
        }
    }
}

/// What a container signs when asked to sign a usage digest (envelope kind
/// `UsageCheckpoint`, with the container's own key). The envelope's domain separation keeps
/// it apart from everything else the container signs (seat tickets, delegations, requests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageStatement {
    /// The container's publisher.
    pub vendor_id: u32,
    /// The container's serial.
    pub serial: String,
    /// The container's Ed25519 key (the signer).
    pub container_key: [u8; 32],
    /// The digest signed ([`checkpoint_digest`]).
    pub digest: [u8; 32],
    /// The container's time when it signed (Unix seconds; never below its clock high-water
    /// mark).
    pub signed_at: u64,
    /// The container's number for this signature: 1 for its first usage signature, one more
    /// for each after (kept in the container's state). A gap between two checkpoints of a
    /// log means signatures that are not in it; a number that goes back, a container state
    /// put back to an earlier copy.
    pub sequence: u64,
    /// What keeps `sequence` from going back (signed, so a log cannot claim more than the
    /// container did). Statements made before this field existed read as `Unanchored`.
    pub anchor: CounterAnchor,
}

/// [`UsageStatement`] as containers signed it before `anchor`.
#[derive(Deserialize)]
struct UsageStatementV1 {
    vendor_id: u32,
    serial: String,
    container_key: [u8; 32],
    digest: [u8; 32],
    signed_at: u64,
    sequence: u64,
}

impl UsageStatement {
    /// Decodes a verified statement envelope, of this form or the earlier one without
    /// `anchor` (which reads as unanchored).
    pub fn decode(env: &Envelope) -> crate::Result<UsageStatement> {
        match env.decode::<UsageStatement>() {
            Ok(st) => Ok(st),
            Err(e) => match env.decode::<UsageStatementV1>() {
                Ok(v1) => Ok(UsageStatement {
                    vendor_id: v1.vendor_id,
                    serial: v1.serial,
                    container_key: v1.container_key,
                    digest: v1.digest,
                    signed_at: v1.signed_at,
                    sequence: v1.sequence,
                    anchor: CounterAnchor::Unanchored,
                }),
                Err(_) => Err(e),
            },
        }
    }
}

/// Checks a checkpoint's signature chain: publisher key → container certificate → the
/// container-signed statement → the digest of this log's head. Returns the statement.
pub fn verify_checkpoint(
    header: &LogHeader,
    checkpoint: &Checkpoint,
    publisher: &VerifyingKey,
) -> std::result::Result<(UsageStatement, ContainerCertificate), String> {
    let cert_env = Envelope::parse(Kind::Certificate, &checkpoint.certificate)
        .map_err(|e| format!("its container certificate is unreadable: {e}"))?;
    if cert_env.verify(publisher).is_err() {
        return Err(
            "signed by a container of another publisher: its container certificate \
                    does not verify against the publisher key"
                .into(),
        );
    }
    let cert: ContainerCertificate = cert_env
        .decode()
        .map_err(|e| format!("its container certificate is unreadable: {e}"))?;
    if cert.vendor_id != header.vendor_id {
        return Err(format!(
            "signed by a container of vendor {:#x}, not {:#x}",
            cert.vendor_id, header.vendor_id
        ));
    }
    let env = Envelope::parse(Kind::UsageCheckpoint, &checkpoint.statement)
        .map_err(|e| format!("forged checkpoint: its statement is unreadable: {e}"))?;
    let container = VerifyingKey::from_bytes(&cert.sign_key)
        .map_err(|_| "its container certificate names an invalid key".to_string())?;
    if env.verify(&container).is_err() {
        return Err(format!(
            "forged checkpoint: its signature does not verify against the key of container {}",
            cert.serial
        ));
    }
    let st = UsageStatement::decode(&env)
        .map_err(|e| format!("forged checkpoint: its statement is unreadable: {e}"))?;
    if st.container_key != cert.sign_key || st.serial != cert.serial {
        return Err(
            "forged checkpoint: statement and certificate name different containers".into(),
        );
    }
    if st.vendor_id != header.vendor_id {
        return Err(format!(
            "forged checkpoint: signed for vendor {:#x}, not {:#x}",
            st.vendor_id, header.vendor_id
        ));
    }
    if st.digest != checkpoint_digest(header, checkpoint.count, &checkpoint.head) {
        return Err(format!(
            "the container signed another head: records before this one were changed, deleted \
             or reordered after container {} signed it, or the checkpoint comes from another log",
            cert.serial
        ));
    }
    if let Some(expiry) = cert.expiry
        && st.signed_at >= expiry
    {
        return Err(format!(
            "signed by container {} after its certificate expired",
            cert.serial
        ));
    }
    Ok((st, cert))
}
