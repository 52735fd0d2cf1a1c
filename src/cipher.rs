//! Tessera ciphertext: self-describing, versioned XChaCha20-Poly1305.
//!
//! ```text
//! format 1: "TSX" | 1 | mode u8 | reserved[3]=0 | vendor_id u32 LE | product_code u32 LE
//!                 | nonce[24]             | ciphertext | tag[16]
//! format 2: "TSX" | 2 | mode u8 | reserved[3]=0 | vendor_id u32 LE | product_code u32 LE
//!                 | key_id[12] | salt[12] | ciphertext | tag[16]
//! ```
//! The 40-byte header is the AEAD's associated data, so a flipped bit anywhere fails the tag;
//! the XChaCha20 nonce is the header's last 24 bytes in both formats.
//!
//! Format 1 (written by local containers: software containers and dongles): the message key
//! is HKDF-SHA256 of the product secret with the nonce as salt and
//! `"tessera v1 msgkey" | mode | vendor LE | product LE` as info. In direct mode the container
//! computes it and encrypts inside; in derived mode the container hands out the message key
//! and the app encrypts.
//!
//! Format 2 (written by network seats, both modes): one more level, so that a client holding
//! a seat on a license server can encrypt and decrypt its own data while the server is out of
//! reach, without ever holding the product secret:
//!
//! ```text
//! seat key    = HKDF-SHA256(ikm = product secret, salt = key_id,
//!                           info = "tessera v2 seat key" | vendor LE | product LE)
//! message key = HKDF-SHA256(ikm = seat key, salt = salt[12],
//!                           info = "tessera v2 msgkey" | mode | vendor LE | product LE)
//! ```
//! The server's container hands a seat its seat key for a key id the seat picked; the seat key
//! opens only ciphertext under that key id.
//!
//! Either format, any holder of the product secret (another machine's container, the
//! publisher's tool, a license server's container) decrypts it: [`message_key`] reads both.
//!
//! Also here: sealing a product secret to a container's X25519 key (ECIES: ephemeral X25519,
//! HKDF-SHA256, XChaCha20-Poly1305), the way an activation carries secrets to a container.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The ciphertext format local containers (software containers, dongles) write: the message
/// key comes from the product secret directly.
pub const CIPHER_VERSION: u8 = 1;
/// The ciphertext format network seats write: the message key comes from a seat key
/// ([`seat_key`]) named by the header's key id.
pub const CIPHER_VERSION_SEAT: u8 = 2;
/// The length of a format-2 key id (the first half of the nonce field).
pub const KEY_ID_LEN: usize = 12;
/// Magic bytes that start every Tessera ciphertext.
pub const MAGIC: [u8; 3] = *b"TSX";
/// Header length in bytes.
pub const HEADER_LEN: usize = 40;
/// Authentication tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Bytes a ciphertext adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// A product secret or message key.
pub type Key = Zeroizing<[u8; 32]>;

/// Where the encryption runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Inside the container; the key never leaves it.
    Direct,
    /// In the app, with a per-message key the container derives.
    Derived,
}

impl Mode {
    fn byte(self) -> u8 {
        match self {
            Mode::Direct => 1,
            Mode::Derived => 2,
        }
    }
}

/// A parsed ciphertext header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format: [`CIPHER_VERSION`] (1) or [`CIPHER_VERSION_SEAT`] (2).
    pub version: u8,
    /// Where it was encrypted.
    pub mode: Mode,
    /// The publisher.
    pub vendor_id: u32,
    /// The product whose secret keys it.
    pub product_code: u32,
    /// The 24-byte nonce field: in format 1 a random nonce (also the HKDF salt); in format 2
    /// the key id and a random salt (`key_id[12] | salt[12]`). The whole field is the
    /// XChaCha20 nonce in both.
    pub nonce: [u8; 24],
}

impl Header {
    /// A format-1 header with a fresh random nonce.
    pub fn new(mode: Mode, vendor_id: u32, product_code: u32) -> Header {
        Header {
            version: CIPHER_VERSION,
            mode,
            vendor_id,
            product_code,
            nonce: crate::util::random(),
        }
    }

    /// A format-2 header under the seat key `key_id`, with a fresh random salt.
    pub fn new_seat(
        mode: Mode,
        vendor_id: u32,
        product_code: u32,
        key_id: [u8; KEY_ID_LEN],
    ) -> Header {
        let mut nonce = [0u8; 24];
        nonce[..KEY_ID_LEN].copy_from_slice(&key_id);
        nonce[KEY_ID_LEN..].copy_from_slice(&crate::util::random::<12>());
        Header {
            version: CIPHER_VERSION_SEAT,
            mode,
            vendor_id,
            product_code,
            nonce,
        }
    }

    /// The key id of a format-2 header (`None` for format 1).
    pub fn key_id(&self) -> Option<[u8; KEY_ID_LEN]> {
        (self.version == CIPHER_VERSION_SEAT).then(|| {
            let mut id = [0u8; KEY_ID_LEN];
            id.copy_from_slice(&self.nonce[..KEY_ID_LEN]);
            id
        })
    }

    /// The header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..3].copy_from_slice(&MAGIC);
        h[3] = self.version;
        h[4] = self.mode.byte();
        h[8..12].copy_from_slice(&self.vendor_id.to_le_bytes());
        h[12..16].copy_from_slice(&self.product_code.to_le_bytes());
        h[16..40].copy_from_slice(&self.nonce);
        h
    }

    /// Parses a bare 40-byte header (no ciphertext after it).
    pub fn parse_header(h: &[u8]) -> Result<Header> {
        if h.len() != HEADER_LEN {
            return Err(Error::InvalidArgument(format!(
                "a header is {HEADER_LEN} bytes, not {}",
                h.len()
            )));
        }
        let mut padded = [0u8; OVERHEAD];
        padded[..HEADER_LEN].copy_from_slice(h);
        Header::parse(&padded)
    }

    /// Parses the header of a ciphertext. A wrong magic, unknown version or mode, nonzero
    /// reserved bytes or a ciphertext shorter than header plus tag is `Tampered` (or
    /// `UnknownVersion`), never a panic.
    pub fn parse(ct: &[u8]) -> Result<Header> {
        if ct.len() < OVERHEAD {
            return Err(Error::Tampered(format!(
                "ciphertext of {} bytes is shorter than the {OVERHEAD}-byte minimum",
                ct.len()
            )));
        }
        if ct[..3] != MAGIC {
            return Err(Error::Tampered(
                "not a Tessera ciphertext (bad magic)".into(),
            ));
        }
        let version = ct[3];
        if version != CIPHER_VERSION && version != CIPHER_VERSION_SEAT {
            return Err(Error::UnknownVersion {
                what: "ciphertext",
                found: version as u16,
                supported: CIPHER_VERSION_SEAT as u16,
            });
        }
        let mode = match ct[4] {
            1 => Mode::Direct,
            2 => Mode::Derived,
            m => return Err(Error::Tampered(format!("unknown ciphertext mode {m}"))),
        };
        if ct[5..8] != [0, 0, 0] {
            return Err(Error::Tampered("reserved header bytes are not zero".into()));
        }
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&ct[16..40]);
        Ok(Header {
            version,
            mode,
            vendor_id: u32::from_le_bytes([ct[8], ct[9], ct[10], ct[11]]),
            product_code: u32::from_le_bytes([ct[12], ct[13], ct[14], ct[15]]),
            nonce,
        })
    }
}

/// Ciphertext length for a plaintext of `len` bytes.
pub fn ciphertext_len(len: usize) -> usize {
    len.saturating_add(OVERHEAD)
}

/// Plaintext length of a ciphertext of `len` bytes (0 if too short).
pub fn plaintext_len(len: usize) -> usize {
    len.saturating_sub(OVERHEAD)
}

/// HKDF-SHA256 of `ikm` with `salt`, and `label | mode | vendor LE | product LE` (mode left
/// out when `None`) as info: 32 bytes.
fn hkdf(ikm: &[u8; 32], salt: &[u8], label: &[u8], mode: Option<Mode>, v: u32, p: u32) -> Key {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut info = Vec::with_capacity(label.len() + 9);
    info.extend_from_slice(label);
    if let Some(m) = mode {
        info.push(m.byte());
    }
    info.extend_from_slice(&v.to_le_bytes());
    info.extend_from_slice(&p.to_le_bytes());
    let mut k = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand(&info, k.as_mut());
    k
}

/// The per-message key for `header` under `product_secret`, for either format: what every
/// holder of the product secret (a container, the publisher's tool) uses.
pub fn message_key(product_secret: &[u8; 32], header: &Header) -> Key {
    match header.key_id() {
        Some(key_id) => seat_message_key(
            &seat_key(
                product_secret,
                header.vendor_id,
                header.product_code,
                &key_id,
            ),
            header,
        ),
        None => hkdf(
            product_secret,
            &header.nonce,
            b"tessera v1 msgkey",
            Some(header.mode),
            header.vendor_id,
            header.product_code,
        ),
    }
}

/// The seat key of `key_id` for a product: what a license server's container hands a network
/// seat so that it encrypts and decrypts format-2 ciphertext under that key id by itself.
pub fn seat_key(
    product_secret: &[u8; 32],
    vendor_id: u32,
    product_code: u32,
    key_id: &[u8; KEY_ID_LEN],
) -> Key {
    hkdf(
        product_secret,
        key_id,
        b"tessera v2 seat key",
        None,
        vendor_id,
        product_code,
    )
}

/// The per-message key of a format-2 `header` under the seat key of its key id. (For a
/// format-1 header this is no key of anything: the caller checks the version.)
pub fn seat_message_key(seat_key: &[u8; 32], header: &Header) -> Key {
    hkdf(
        seat_key,
        &header.nonce[KEY_ID_LEN..],
        b"tessera v2 msgkey",
        Some(header.mode),
        header.vendor_id,
        header.product_code,
    )
}

/// Encrypts `plaintext` into `out` (which must hold `ciphertext_len(plaintext.len())` bytes)
/// under the message key `key`. Returns the bytes written.
pub fn seal_with_key(
    key: &[u8; 32],
    header: &Header,
    plaintext: &[u8],
    out: &mut [u8],
) -> Result<usize> {
    let need = ciphertext_len(plaintext.len());
    if out.len() < need {
        return Err(Error::BufferTooSmall { needed: need });
    }
    let h = header.encode();
    out[..HEADER_LEN].copy_from_slice(&h);
    let body_end = HEADER_LEN + plaintext.len();
    out[HEADER_LEN..body_end].copy_from_slice(plaintext);
    let aead = XChaCha20Poly1305::new(key.into());
    let tag = aead
        .encrypt_in_place_detached(
            XNonce::from_slice(&header.nonce),
            &h,
            &mut out[HEADER_LEN..body_end],
        )
        .map_err(|_| Error::Internal("AEAD encryption failed".into()))?;
    out[body_end..need].copy_from_slice(&tag);
    Ok(need)
}

/// Decrypts the ciphertext `ct` (whose header is `header`) into `out` with the message key.
/// Returns the plaintext length.
pub fn open_with_key(key: &[u8; 32], header: &Header, ct: &[u8], out: &mut [u8]) -> Result<usize> {
    let n = plaintext_len(ct.len());
    if out.len() < n {
        return Err(Error::BufferTooSmall { needed: n });
    }
    let body = &ct[HEADER_LEN..HEADER_LEN + n];
    let tag = Tag::from_slice(&ct[HEADER_LEN + n..]);
    out[..n].copy_from_slice(body);
    let aead = XChaCha20Poly1305::new(key.into());
    if aead
        .decrypt_in_place_detached(
            XNonce::from_slice(&header.nonce),
            &ct[..HEADER_LEN],
            &mut out[..n],
            tag,
        )
        .is_err()
    {
        zeroize::Zeroize::zeroize(&mut out[..n]);
        return Err(Error::Tampered(
            "ciphertext failed authentication (modified, or another product's key)".into(),
        ));
    }
    Ok(n)
}

/// Encrypts with the product secret itself (the publisher's tool and the container use this).
pub fn encrypt(product_secret: &[u8; 32], header: &Header, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; ciphertext_len(plaintext.len())];
    seal_with_key(
        &message_key(product_secret, header),
        header,
        plaintext,
        &mut out,
    )?;
    Ok(out)
}

/// Decrypts with the product secret itself.
pub fn decrypt(product_secret: &[u8; 32], ct: &[u8]) -> Result<Vec<u8>> {
    let header = Header::parse(ct)?;
    let mut out = vec![0u8; plaintext_len(ct.len())];
    open_with_key(&message_key(product_secret, &header), &header, ct, &mut out)?;
    Ok(out)
}

/// A product secret sealed to one container's X25519 key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// The publisher.
    pub vendor_id: u32,
    /// The product.
    pub product_code: u32,
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The AEAD nonce.
    pub nonce: [u8; 24],
    /// The sealed 32-byte secret and its tag.
    pub ciphertext: Vec<u8>,
}

fn seal_key(shared: &[u8; 32], eph: &[u8; 32], recipient: &[u8; 32]) -> Key {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph);
    salt[32..].copy_from_slice(recipient);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut k = Zeroizing::new([0u8; 32]);
    let _ = hk.expand(b"tessera v1 seal product secret", k.as_mut());
    k
}

fn seal_aad(vendor_id: u32, product_code: u32, context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(8 + context.len());
    aad.extend_from_slice(&vendor_id.to_le_bytes());
    aad.extend_from_slice(&product_code.to_le_bytes());
    aad.extend_from_slice(context);
    aad
}

/// Seals `secret` to `recipient`; `context` (e.g. the container serial) is bound in.
pub fn seal_secret(
    recipient: &[u8; 32],
    vendor_id: u32,
    product_code: u32,
    context: &[u8],
    secret: &[u8; 32],
) -> Result<SealedSecret> {
    let eph = StaticSecret::from(crate::util::random::<32>());
    let eph_pub = XPublicKey::from(&eph).to_bytes();
    let shared = Zeroizing::new(eph.diffie_hellman(&XPublicKey::from(*recipient)).to_bytes());
    let key = seal_key(&shared, &eph_pub, recipient);
    let nonce: [u8; 24] = crate::util::random();
    let mut buf = secret.to_vec();
    let tag = XChaCha20Poly1305::new(key.as_ref().into())
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &seal_aad(vendor_id, product_code, context),
            &mut buf,
        )
        .map_err(|_| Error::Internal("sealing failed".into()))?;
    buf.extend_from_slice(&tag);
    Ok(SealedSecret {
        vendor_id,
        product_code,
        ephemeral: eph_pub,
        nonce,
        ciphertext: buf,
    })
}

/// Opens a sealed secret with the container's X25519 secret.
pub fn open_secret(recipient: &StaticSecret, context: &[u8], sealed: &SealedSecret) -> Result<Key> {
    if sealed.ciphertext.len() != 32 + TAG_LEN {
        return Err(Error::Tampered(
            "sealed product secret has the wrong length".into(),
        ));
    }
    let shared = Zeroizing::new(
        recipient
            .diffie_hellman(&XPublicKey::from(sealed.ephemeral))
            .to_bytes(),
    );
    let key = seal_key(
        &shared,
        &sealed.ephemeral,
        XPublicKey::from(recipient).as_bytes(),
    );
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&sealed.ciphertext[..32]);
    XChaCha20Poly1305::new(key.as_ref().into())
        .decrypt_in_place_detached(
            XNonce::from_slice(&sealed.nonce),
            &seal_aad(sealed.vendor_id, sealed.product_code, context),
            out.as_mut(),
            Tag::from_slice(&sealed.ciphertext[32..]),
        )
        .map_err(|_| {
            Error::Tampered("sealed product secret does not open with this container's key".into())
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_modes_round_trip_and_any_flipped_bit_is_tampered() {
        let secret = [7u8; 32];
        for mode in [Mode::Direct, Mode::Derived] {
            let h = Header::new(mode, 42, 7);
            let ct = encrypt(&secret, &h, b"attack at dawn").unwrap();
            assert_eq!(ct.len(), 14 + OVERHEAD);
            assert_eq!(Header::parse(&ct).unwrap(), h);
            assert_eq!(decrypt(&secret, &ct).unwrap(), b"attack at dawn");
            for i in 0..ct.len() * 8 {
                let mut bad = ct.clone();
                bad[i / 8] ^= 1 << (i % 8);
                let e = decrypt(&secret, &bad).unwrap_err();
                assert!(
                    matches!(e, Error::Tampered(_) | Error::UnknownVersion { .. }),
                    "bit {i}: {e}"
                );
            }
            assert!(matches!(decrypt(&[8u8; 32], &ct), Err(Error::Tampered(_))));
        }
    }

    #[test]
    fn format_2_round_trips_in_both_modes_and_any_flipped_bit_is_tampered() {
        let secret = [7u8; 32];
        let key_id = [0xA5u8; KEY_ID_LEN];
        let seat = seat_key(&secret, 42, 7, &key_id);
        for mode in [Mode::Direct, Mode::Derived] {
            let h = Header::new_seat(mode, 42, 7, key_id);
            assert_eq!(h.version, CIPHER_VERSION_SEAT);
            assert_eq!(h.key_id(), Some(key_id));
            // Sealed by a network seat with its seat key alone.
            let mut ct = vec![0u8; ciphertext_len(14)];
            seal_with_key(&seat_message_key(&seat, &h), &h, b"attack at dawn", &mut ct).unwrap();
            assert_eq!(&ct[..4], b"TSX\x02");
            assert_eq!(ct[4], mode.byte());
            assert_eq!(&ct[16..28], &key_id);
            assert_eq!(Header::parse(&ct).unwrap(), h);
            assert_eq!(Header::parse_header(&ct[..HEADER_LEN]).unwrap(), h);
            // Read by any holder of the product secret.
            assert_eq!(decrypt(&secret, &ct).unwrap(), b"attack at dawn");
            // And sealed by one: the same message key.
            assert_eq!(*message_key(&secret, &h), *seat_message_key(&seat, &h));
            let mut out = [0u8; 14];
            let n = open_with_key(&seat_message_key(&seat, &h), &h, &ct, &mut out).unwrap();
            assert_eq!(&out[..n], b"attack at dawn");
            for i in 0..ct.len() * 8 {
                let mut bad = ct.clone();
                bad[i / 8] ^= 1 << (i % 8);
                let e = decrypt(&secret, &bad).unwrap_err();
                assert!(
                    matches!(e, Error::Tampered(_) | Error::UnknownVersion { .. }),
                    "bit {i}: {e}"
                );
                // The seat key does not open it either (under the header it now claims).
                if let Ok(bh) = Header::parse(&bad) {
                    let mut out = [0u8; 14];
                    assert!(
                        open_with_key(&seat_message_key(&seat, &bh), &bh, &bad, &mut out).is_err()
                    );
                }
            }
            assert!(matches!(decrypt(&[8u8; 32], &ct), Err(Error::Tampered(_))));
            // Another key id's seat key, another product's: no.
            for other in [
                seat_key(&secret, 42, 7, &[0xA4; KEY_ID_LEN]),
                seat_key(&secret, 42, 8, &key_id),
                seat_key(&secret, 43, 7, &key_id),
            ] {
                let mut out = [0u8; 14];
                assert!(matches!(
                    open_with_key(&seat_message_key(&other, &h), &h, &ct, &mut out),
                    Err(Error::Tampered(_))
                ));
            }
        }
    }

    #[test]
    fn the_two_formats_key_differently_and_other_versions_are_refused() {
        let secret = [7u8; 32];
        let v2 = Header::new_seat(Mode::Derived, 42, 7, [1; KEY_ID_LEN]);
        let v1 = Header {
            version: CIPHER_VERSION,
            ..v2
        };
        assert_eq!(v1.key_id(), None);
        assert_ne!(*message_key(&secret, &v1), *message_key(&secret, &v2));
        let ct = encrypt(&secret, &v2, b"x").unwrap();
        for v in [0u8, 3, 255] {
            let mut bad = ct.clone();
            bad[3] = v;
            assert!(matches!(
                Header::parse(&bad),
                Err(Error::UnknownVersion { found, supported: 2, .. }) if found == v as u16
            ));
        }
    }

    /// A format-1 ciphertext written by the build before format 2 existed (the fuzz seed
    /// `ciphertext/ct-0`): it still reads, and the same header seals to the same bytes.
    #[test]
    fn format_1_written_before_format_2_still_reads() {
        let ct = hex::decode(
            "5453580101000000577e00000100000000000000000000000000000000000000\
             0000000000000000",
        )
        .unwrap();
        let mut ct = ct;
        ct.extend(
            hex::decode("17157cb34f499d118f076aef08cf887f29660afd58c435245ee87cdc8e66").unwrap(),
        );
        let secret = [0x5E; 32];
        let h = Header::parse(&ct).unwrap();
        assert_eq!((h.version, h.mode, h.key_id()), (1, Mode::Direct, None));
        assert_eq!(decrypt(&secret, &ct).unwrap(), b"some plaintext");
        assert_eq!(encrypt(&secret, &h, b"some plaintext").unwrap(), ct);
    }

    #[test]
    fn short_and_garbage_ciphertexts_are_tampered() {
        for n in 0..OVERHEAD {
            assert!(matches!(
                decrypt(&[1; 32], &vec![0u8; n]),
                Err(Error::Tampered(_))
            ));
        }
        assert!(matches!(
            decrypt(&[1; 32], &[0xAB; 100]),
            Err(Error::Tampered(_))
        ));
    }

    #[test]
    fn sealed_secret_opens_only_for_its_container_and_context() {
        let c = StaticSecret::from([3u8; 32]);
        let pk = XPublicKey::from(&c).to_bytes();
        let s = seal_secret(&pk, 1, 2, b"SW-1", &[9; 32]).unwrap();
        assert_eq!(*open_secret(&c, b"SW-1", &s).unwrap(), [9; 32]);
        assert!(open_secret(&c, b"SW-2", &s).is_err());
        assert!(open_secret(&StaticSecret::from([4u8; 32]), b"SW-1", &s).is_err());
        let mut bad = s.clone();
        bad.product_code = 3;
        assert!(open_secret(&c, b"SW-1", &bad).is_err());
    }
}
