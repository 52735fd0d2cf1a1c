//! An established channel: counter-numbered frames sealed with snow's stateless transport.

use snow::StatelessTransportState;

use super::FRAME_OVERHEAD;
use crate::{Error, Result};

const FRAME: &str = "channel frame";

/// One end of an established channel. Frames are `counter u64 LE | ciphertext`; each
/// direction has its own key and its own counter, which starts at 0 and strictly increases.
pub struct Channel {
    transport: StatelessTransportState,
    /// The counter of the next frame [`Channel::seal`] makes.
    next_send: u64,
    /// The counter of the last frame [`Channel::open`] accepted.
    last_received: Option<u64>,
    remote_static: [u8; 32],
    handshake_hash: [u8; 32],
    /// The largest frame either end accepts ([`MAX_FRAME`](super::MAX_FRAME) for a dongle; the license
    /// server's wire allows larger ones).
    max_frame: usize,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("remote_static", &hex::encode(self.remote_static))
            .field("next_send", &self.next_send)
            .field("last_received", &self.last_received)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel whose frames may be up to `max_frame` bytes (the license server's wire).
    pub(crate) fn with_max_frame(
        transport: StatelessTransportState,
        remote_static: [u8; 32],
        handshake_hash: [u8; 32],
        max_frame: usize,
    ) -> Channel {
        Channel {
            transport,
            next_send: 0,
            last_received: None,
            remote_static,
            handshake_hash,
            max_frame: max_frame.max(FRAME_OVERHEAD + 1),
        }
    }

    /// The largest plaintext one frame carries.
    pub fn max_plaintext(&self) -> usize {
        self.max_frame - FRAME_OVERHEAD
    }

    /// Encrypts a message into a frame: `counter u64 LE | ciphertext`. The plaintext may be
    /// at most [`MAX_PLAINTEXT`](super::MAX_PLAINTEXT) bytes, so the frame fits [`MAX_FRAME`](super::MAX_FRAME).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut frame = Vec::with_capacity(FRAME_OVERHEAD + plaintext.len());
        self.seal_into(plaintext, &mut frame)?;
        Ok(frame)
    }

    /// [`Channel::seal`], appending the frame to `out` (a buffer the caller reuses, and
    /// which may already hold, say, a length prefix). On error `out` is left as it was.
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if plaintext.len() > self.max_plaintext() {
            return Err(Error::InvalidArgument(format!(
                "a channel message of {} bytes is larger than {}",
                plaintext.len(),
                self.max_plaintext()
            )));
        }
        let counter = self.next_send;
        // 2^64-1 is reserved by Noise; a channel never lives that long.
        if counter == u64::MAX {
            return Err(Error::Internal(
                "channel counter exhausted: open a new channel".into(),
            ));
        }
        let start = out.len();
        out.resize(start + FRAME_OVERHEAD + plaintext.len(), 0);
        out[start..start + 8].copy_from_slice(&counter.to_le_bytes());
        match self
            .transport
            .write_message(counter, plaintext, &mut out[start + 8..])
        {
            Ok(n) => {
                out.truncate(start + 8 + n);
                self.next_send = counter + 1;
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(Error::Internal(format!(
                    "sealing channel frame {counter}: {e}"
                )))
            }
        }
    }

    /// Decrypts a frame from the peer. Rejects a frame that is truncated (shorter than
    /// [`FRAME_OVERHEAD`]) or larger than [`MAX_FRAME`](super::MAX_FRAME) (`Malformed`), whose counter is not
    /// above the last accepted one (`Tampered`, a replay), or that fails authentication
    /// (`Tampered`). A rejected frame changes nothing.
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>> {
        if frame.len() < FRAME_OVERHEAD {
            return Err(Error::malformed(
                FRAME,
                format!(
                    "truncated: {} bytes, at least {FRAME_OVERHEAD} needed",
                    frame.len()
                ),
            ));
        }
        if frame.len() > self.max_frame {
            return Err(Error::malformed(
                FRAME,
                format!("{} bytes is larger than {}", frame.len(), self.max_frame),
            ));
        }
        let mut counter_bytes = [0u8; 8];
        counter_bytes.copy_from_slice(&frame[..8]);
        let counter = u64::from_le_bytes(counter_bytes);
        if let Some(last) = self.last_received
            && counter <= last
        {
            return Err(Error::Tampered(format!(
                "replayed or reordered channel frame: counter {counter} is not above the last \
                 accepted {last}"
            )));
        }
        if counter == u64::MAX {
            return Err(Error::Tampered(
                "channel frame with the reserved counter 2^64-1".into(),
            ));
        }
        let ciphertext = &frame[8..];
        let mut plaintext = vec![0u8; ciphertext.len() - 16];
        let n = self
            .transport
            .read_message(counter, ciphertext, &mut plaintext)
            .map_err(|_| {
                Error::Tampered(format!(
                    "channel frame {counter} failed authentication (modified, or not from this \
                     channel's peer)"
                ))
            })?;
        plaintext.truncate(n);
        self.last_received = Some(counter);
        Ok(plaintext)
    }

    /// The peer's static public key (for a dongle: the host's identity; for the runtime: the
    /// device key its certificate names).
    pub fn remote_static(&self) -> [u8; 32] {
        self.remote_static
    }

    /// The Noise handshake hash: the same on both ends, unique to this channel (channel
    /// binding).
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.handshake_hash
    }
}
